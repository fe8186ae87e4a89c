#!/usr/bin/env python3
"""The math neurons of the zoo's SiLU model, found by an ability run and ablated with a hook.

    PYTHONPATH=python /usr/bin/python3 examples/python/math_neurons.py [MODEL]

1. `neuronlab record --pool` + `neuronlab ability` on the first 20 documents of each ability of
   notebooks-data/eval (140 documents): the top 5% neurons of each layer for "math" (FuncScore,
   README "Ability neurons").
2. With the package: a hook on ffn_act zeroes those neurons; the NLL of the next 10 documents of
   each ability (held out from the selection) with and without it.
3. Which tokens the strongest math neurons promote: W_U · (g ⊙ W_out[:, i]) computed in numpy from
   the weights the package exposes (g = the final norm's weight; the direct effect of the neuron's
   output vector on the logits, a "logit lens" of one neuron).
"""
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))
import neuronlab  # noqa: E402

MODEL = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "notebooks-data" / "models" / "silu"
CLI = ROOT / os.environ.get("NL_BUILD", "build") / "neuronlab"
ABILITIES = ["code", "ethics", "knowledge", "linguistic", "math", "translation", "writing"]


def rows(lo, hi):
    out = []
    for a in ABILITIES:
        with open(ROOT / "notebooks-data" / "eval" / f"{a}.jsonl") as f:
            out += [line for i, line in enumerate(f) if lo <= i < hi]
    return out


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    (tmp / "select.jsonl").write_text("".join(rows(0, 20)))
    (tmp / "heldout.jsonl").write_text("".join(rows(20, 30)))
    def run(*args):
        r = subprocess.run([str(CLI), *map(str, args), "--quiet"], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"math_neurons.py: neuronlab {args[0]} failed: {r.stderr.strip()}")

    run("record", MODEL, tmp / "select.jsonl", "-o", tmp / "acts.h5", "--pool")
    run("ability", tmp / "acts.h5", "--db", tmp / "results.db")
    db = sqlite3.connect(tmp / "results.db")
    top = db.execute("""SELECT t.layer, t.neuron, s.score FROM ability_top t JOIN ability_score s
                          ON s.run_id = t.run_id AND s.ability = t.ability AND s.layer = t.layer AND s.neuron = t.neuron
                         WHERE t.ability = 'math' ORDER BY s.score DESC, t.layer, t.neuron""").fetchall()
    db.close()

    m = neuronlab.Model(MODEL)
    math_by_layer = {}
    for layer, neuron, _ in top:
        math_by_layer.setdefault(layer, []).append(neuron)
    print(f"{m}\nmath neurons (top 5% of each layer by FuncScore): {len(top)} = "
          + ", ".join(f"L{l}: {len(v)}" for l, v in sorted(math_by_layer.items())))

    def ablate(view, info):  # view: (T, d_ff) activations of one layer, edited in place
        view[:, math_by_layer.get(info.layer, [])] = 0

    held = m.dataset(tmp / "heldout.jsonl")
    base = m.ppl(held)
    cut = m.ppl(held, hooks={("ffn_act", None): ablate})
    print(f"\nheld-out documents (10 per ability), NLL in nats per predicted token:")
    print(f"{'label':<12} {'tokens':>6} {'base':>7} {'ablated':>8} {'change':>7}  ppl change")
    for lab in ABILITIES:
        b, c = base.by_label[lab], cut.by_label[lab]
        print(f"{lab:<12} {b['tokens']:>6} {b['nll']:>7.3f} {c['nll']:>8.3f} {c['nll'] - b['nll']:>+7.3f}  {c['ppl'] / b['ppl'] - 1:>+8.1%}")

    W_U, g = m.w_u, m.weight("final_norm")  # (V, D), (D,)
    print("\ntokens the strongest math neurons promote (W_U · (g ⊙ W_out[:, i]), top 8):")
    for layer, neuron, score in top[:6]:
        direction = g * m.w_out(layer)[:, neuron]  # (D,)
        logits = W_U @ direction                   # (V,)
        best = np.argsort(-logits)[:8]
        print(f"L{layer} n{neuron:<4} AP {score:.3f}: " + " ".join(json.dumps(m.decode([t])) for t in best))
    summed = sum(W_U @ (g * m.w_out(l)[:, n]) for l, n, _ in top)
    print("all math neurons together: " + " ".join(json.dumps(m.decode([t])) for t in np.argsort(-summed)[:12]))
