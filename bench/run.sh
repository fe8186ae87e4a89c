#!/usr/bin/env bash
# bench/run.sh BUILD — forward-pass benchmark: neuronlab ppl/record against plain PyTorch
# and PyTorch + h5py, on stories260K (when ../shared is present) and a ~125M-parameter
# random-weight Llama folder generated once under BUILD/bench/. Prints one table, the
# target ratios, and the BLAS in use; see bench/README.md. Called by `make bench`.
# Options after BUILD go to bench/bench.py (--docs N, --repeat N, --no-threads-exp, --keep).
set -euo pipefail
BUILD=${1:-build}
shift || true
cd "$(dirname "$0")/.."
PY=/usr/bin/python3   # Debian's python3 (python3-torch, python3-h5py); the pyenv python3 on PATH has no torch

if [ ! -x "$BUILD/neuronlab" ]; then
  echo "bench: $BUILD/neuronlab not found: run 'make' first" >&2
  exit 1
fi
if ! "$PY" -c 'import numpy, torch, h5py' 2>/dev/null; then
  pkgs="python3-numpy python3-torch python3-h5py"
  if [ "$(id -u)" -eq 0 ]; then
    echo "bench: installing $pkgs" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $pkgs >&2 || {
      apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $pkgs >&2; }
  else
    echo "bench: needs Debian packages: run as root: apt-get install $pkgs" >&2
    exit 1
  fi
fi
exec "$PY" bench/bench.py "$BUILD" "$@"
