"""Shared fixtures of the Python package's tests (run by tests/python.sh).

NL_BUILD (default build/) names the build folder whose CLI the package is compared with; the
package loads that folder's libneuronlab.so unless NEURONLAB_LIB says otherwise. Models: the
committed zoo model notebooks-data/models/silu (always) and ../shared's stories260K (skipped
when absent). Every model runs on one thread, as the CLI does with --threads 1, so the numbers
are bit for bit the same computation.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = (ROOT / os.environ.get("NL_BUILD", "build")).resolve()
sys.path.insert(0, str(ROOT / "python"))
os.environ.setdefault("NEURONLAB_LIB", str(BUILD / "libneuronlab.so"))
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import neuronlab  # noqa: E402

SILU = ROOT / "notebooks-data" / "models" / "silu"
STORIES = ROOT.parent / "shared" / "models" / "stories260K"
EVAL = ROOT / "notebooks-data" / "eval"


def cli(*args):
    """Runs build/neuronlab with --threads 1 --quiet; returns stdout."""
    cmd = [str(BUILD / "neuronlab"), *map(str, args), "--threads", "1", "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def small_eval(path, per_label=3, labels=("code", "ethics", "math", "translation")):
    """The first per_label documents of some abilities of the bundled eval sets (small, fast)."""
    with open(path, "w") as out:
        for lab in labels:
            with open(EVAL / f"{lab}.jsonl") as f:
                for _, line in zip(range(per_label), f):
                    out.write(line)
    return path


@pytest.fixture(scope="session")
def silu():
    m = neuronlab.Model(SILU, threads=1)
    yield m
    m.close()


@pytest.fixture(scope="session")
def stories():
    if not (STORIES / "stories260K.bin").exists():
        pytest.skip(f"stories260K checks: {STORIES} is absent (../shared not beside the clone)")
    m = neuronlab.Model(STORIES / "stories260K.bin", threads=1)
    yield m
    m.close()


@pytest.fixture(params=["silu", "stories260K"])
def case(request, tmp_path):
    """(model, model path, a small dataset) for both models."""
    if request.param == "silu":
        return request.getfixturevalue("silu"), SILU, small_eval(tmp_path / "eval.jsonl")
    m = request.getfixturevalue("stories")
    data = tmp_path / "stories.jsonl"
    rows = [json.loads(l) for l in open(STORIES / "tokens.jsonl")]
    with open(data, "w") as f:
        for i, r in enumerate(rows[:6]):
            f.write(json.dumps({"tokens": r["tokens"][:120], "label": "ab"[i % 2]}) + "\n")
    return m, STORIES / "stories260K.bin", data
