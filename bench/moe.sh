#!/usr/bin/env bash
# bench/moe.sh BUILD [E] [K] [REPEAT] — expert-FFN speed: an MoEfied FFN layer of Llama-7B shape
# (d_model 4096, d_ff 11008, random weights; E experts from a random permutation, K = E/4 by
# default) against the dense FFN at batch 1 and batch 64, with the ratios and the BLAS kernel.
# Builds bench/moe_speed.c against BUILD/libneuronlab.a and writes the one-layer model once
# under BUILD/bench/moe/ (about 0.8 GB, written by bench/sparsity_gen). Called by `make bench`.
# Threads: OMP_NUM_THREADS / OPENBLAS_NUM_THREADS as set (default: all cores).
set -euo pipefail
BUILD=${1:-build}
shift || true
cd "$(dirname "$0")/.."
lib=$BUILD/libneuronlab.a
if [ ! -f "$lib" ]; then echo "bench/moe: $lib not found: run 'make' first" >&2; exit 1; fi
dir=$BUILD/bench/moe
mkdir -p "$dir"
LINK=("$lib" -L/usr/lib/x86_64-linux-gnu/hdf5/serial -lhdf5
  /usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0 -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp
  -ljansson -lsqlite3 -lpcre2-8 -lm -lpthread)
CF=(-std=c11 -D_GNU_SOURCE -O2 -march=x86-64-v2 -fopenmp -Iinclude -Isrc -I. -I/usr/include/hdf5/serial)
cc "${CF[@]}" bench/moe_speed.c -o "$dir/moe_speed" "${LINK[@]}"
if [ ! -f "$dir/model/model.safetensors" ]; then
  need=1
  avail=$(df -Pk "$dir" | awk 'NR == 2 { print int($4 / 1048576) }')
  if [ "$avail" -le "$need" ]; then echo "bench/moe: needs 1 GiB free under $dir, $avail GiB free" >&2; exit 1; fi
  cc "${CF[@]}" bench/sparsity_gen.c -o "$dir/sparsity_gen" "${LINK[@]}"
  "$dir/sparsity_gen" model "$dir/model" 4096 11008 1
fi
exec "$dir/moe_speed" "$dir/model" "$@"
