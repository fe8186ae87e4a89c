#!/usr/bin/python3
"""torch_moefy.py MODEL MOE_DIR DATA.jsonl K zero|mean [LAYERS] — an independent PyTorch forward
of a SiLU-gated Llama (bench/torch_llama.py) MoEfied from a neuronlab MoE folder: per MoE layer
the sim router (x·ĉ_e, top K by torch.topk), the dense activations computed then every
unselected expert's neurons replaced by 0 or μ (the brute-force definition, not the kernel's
static vectors), so it checks `neuronlab ppl --moe DIR --k K --fill F` end to end. LAYERS
(comma list) MoEfies only those layers, which is how the README's per-layer fill comparison was
measured. DATA rows must carry "tokens" and fit the context. Prints the overall NLL and ppl."""
import sys, os, json, math, numpy as np, torch, torch.nn.functional as Fn
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'bench'))
import torch_llama as TL
model_dir, moedir, data, K, fill = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
ex = TL.read_safetensors(moedir + '/experts.safetensors')
c, w = TL.load_hf(model_dir)
m = TL.Llama(c, w).eval()
LAY = [int(v) for v in sys.argv[6].split(",")] if len(sys.argv) > 6 else list(range(len(m.layers)))
for l, layer in enumerate(m.layers):
    if l not in LAY: continue
    mlp = layer.mlp
    perm = torch.as_tensor(np.asarray(ex[f'layers.{l}.perm']).astype(np.int64)); off = np.asarray(ex[f'layers.{l}.offset']).astype(int)
    mu = torch.as_tensor(np.asarray(ex[f'layers.{l}.mu']).astype(np.float32)); C = torch.as_tensor(np.asarray(ex[f'layers.{l}.router.sim']).astype(np.float32))
    E = C.shape[0]; F = mu.shape[0]
    expert_of = torch.full((F,), -1, dtype=torch.long)
    for e in range(E): expert_of[perm[off[e]:off[e+1]]] = e
    r = mu if fill == 'mean' else torch.zeros_like(mu)
    def fwd(x, mlp=mlp, C=C, expert_of=expert_of, r=r, E=E):
        a = Fn.silu(mlp.gate_proj(x)) * mlp.up_proj(x)          # (B, T, F) dense, then replaced
        z = x @ C.T                                              # (B, T, E)
        top = torch.topk(z, K, dim=-1).indices
        sel = torch.zeros(z.shape, dtype=torch.bool).scatter_(-1, top, True)
        keep = torch.where(expert_of >= 0, sel[..., expert_of.clamp(min=0)], torch.ones_like(sel[..., :1]).expand(*sel.shape[:-1], F))
        a = torch.where(keep, a, r)
        return mlp.down_proj(a)
    mlp.forward = fwd
tot = n = 0
with torch.inference_mode():
    for ln in open(data):
        d = json.loads(ln)['tokens']; t = torch.tensor(d).unsqueeze(0)
        lg = m(t)[0, :-1].float(); tot += Fn.cross_entropy(lg, t[0, 1:], reduction='sum').item(); n += len(d) - 1
print(f'layers={LAY} K={K} fill={fill} nll {tot/n:.6f} ppl {math.exp(tot/n):.4f} over {n}')
