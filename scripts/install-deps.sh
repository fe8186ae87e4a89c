#!/usr/bin/env bash
# install-deps.sh — installs the Debian packages neuronlab needs, only those missing.
# Idempotent. As root it runs apt-get; otherwise it prints the exact command to run.
set -euo pipefail
pkgs=(build-essential pkg-config libhdf5-dev libopenblas-dev libopenblas0-openmp libjansson-dev libsqlite3-dev
      libpcre2-dev libcriterion-dev gnuplot-nox sqlite3 libmetis-dev
      python3-torch python3-numpy python3-h5py python3-sentencepiece
      python3-pytest # tests/python.sh: the Python package (python/tests)
      clang libclang-rt-14-dev # clang + libFuzzer: the harnesses of fuzz/ (make fuzz, tests/fuzz_smoke.sh)
      libopenmpi-dev openmpi-bin libhdf5-openmpi-dev) # make mpi: build-mpi/neuronlab (tests/mpi.sh)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "neuronlab needs these Debian packages; run as root:" >&2
  echo "  apt-get update && $cmd" >&2
  exit 1
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2 || true
apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
