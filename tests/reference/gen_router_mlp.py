#!/usr/bin/python3
"""gen_router_mlp.py — PyTorch reference for the MLP router of MoEfication (src/moe/router_mlp.c,
include/neuronlab/moe.h "the MLP router") → tests/fixtures/moe/router_mlp.json.

The router: z = W2·tanh(W1·x̂), x̂ = x/‖x‖₂, W1 (E, D), W2 (E, E), no bias. A batch's targets are
y = s / max(s) over the whole batch (every token and expert); the loss is
torch.nn.functional.binary_cross_entropy_with_logits(z, y) (mean over B·E); the optimiser is
torch.optim.Adam(lr=1e-2) with its defaults (betas 0.9, 0.999, eps 1e-8, no weight decay).
Computed in float64 (the C trainer works in double); the inputs x and scores s are float32
values (the C API takes float), stored exactly as decimal strings of their float64 value.

The fixture holds the initial W1, W2 and three steps, each with its batch (x, s), the loss and
the gradients at the weights before the step, and W1, W2 after the step (so Adam's bias
correction at t = 1, 2, 3 is covered). One batch has a zero input row (x̂ = 0) and one has all
scores 0 (targets 0).
Run: /usr/bin/python3 tests/reference/gen_router_mlp.py   (Debian python3-torch)
Checked by: tests/test_moe_router.c (router_mlp_matches_pytorch, 1e-5 relative).
"""

import json
import os

import torch
import torch.nn.functional as F

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "moe", "router_mlp.json")
D, E, LR = 6, 4, 1e-2
BATCHES = (5, 3, 4)


def f32(t):
    return t.to(torch.float32).to(torch.float64)


def main():
    g = torch.Generator().manual_seed(12)
    W1 = torch.randn(E, D, generator=g, dtype=torch.float64)
    W2 = torch.eye(E, dtype=torch.float64) + 0.3 * torch.randn(E, E, generator=g, dtype=torch.float64)
    init = {"w1": W1.flatten().tolist(), "w2": W2.flatten().tolist()}
    p1, p2 = W1.clone().requires_grad_(True), W2.clone().requires_grad_(True)
    opt = torch.optim.Adam([p1, p2], lr=LR)
    steps = []
    for i, B in enumerate(BATCHES):
        x = f32(torch.randn(B, D, generator=g, dtype=torch.float64) * 3)
        s = f32(torch.rand(B, E, generator=g, dtype=torch.float64) ** 3 * 5)
        if i == 1:
            x[1] = 0.0  # a zero FFN input: x̂ = 0
        if i == 2:
            s[:] = 0.0  # no oracle mass: targets 0
        n = x.norm(dim=1, keepdim=True)
        xh = torch.where(n > 0, x / torch.where(n > 0, n, torch.ones_like(n)), torch.zeros_like(x))
        m = s.max()
        y = s / m if m > 0 else torch.zeros_like(s)
        opt.zero_grad()
        z = torch.tanh(xh @ p1.T) @ p2.T
        loss = F.binary_cross_entropy_with_logits(z, y)
        loss.backward()
        g1, g2 = p1.grad.clone(), p2.grad.clone()
        opt.step()
        steps.append({
            "x": x.flatten().tolist(), "s": s.flatten().tolist(), "batch": B,
            "loss": loss.item(), "g1": g1.flatten().tolist(), "g2": g2.flatten().tolist(),
            "w1_after": p1.detach().flatten().tolist(), "w2_after": p2.detach().flatten().tolist(),
            "z": z.detach().flatten().tolist(),
        })
    out = {"generator": "tests/reference/gen_router_mlp.py", "torch": torch.__version__, "d": D, "e": E, "lr": LR,
           "init": init, "steps": steps}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
