#!/usr/bin/env bash
# bf16.sh — the bf16 GEMM candidates of `--compute bf16` on this machine (bench/README "bf16"):
#   1. OpenBLAS: does Debian's libopenblas export cblas_sbgemm (built with BUILD_BFLOAT16)? (nm -D)
#   2. bench/bf16_peak.c at 2048³, all threads and one: cblas_sgemm (f32), neuronlab's own
#      AVX512-BF16 kernel (nl_matmul_bf16, activations rounded inside the timed call) and, when
#      libdnnl-dev is installed, oneDNN's bf16 matmul (weights reordered once, bf16 activations
#      given, so its time leaves out the rounding). oneDNN is only measured here: neuronlab does
#      not link it.
# Usage: bash bench/bf16.sh [BUILD]  (BUILD/libneuronlab.a must exist: make)
set -u
cd "$(dirname "$0")/.."
build=${1:-build}
out=$build/bench/out; mkdir -p "$out"
BLAS_DIR=/usr/lib/x86_64-linux-gnu/openblas-openmp
echo "== bf16 GEMM candidates (load average $(cut -d' ' -f1 /proc/loadavg), $(nproc) CPUs)"
if grep -qw avx512_bf16 /proc/cpuinfo; then echo "   CPU: AVX512-BF16 present"; else echo "   CPU: no AVX512-BF16 (--compute bf16 falls back to f32)"; fi
for lib in "$BLAS_DIR/libopenblas.so.0" /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0; do
  [ -e "$lib" ] || continue
  n=$(nm -D "$lib" 2>/dev/null | grep -c 'cblas_sbgemm\|sbgemm_')
  echo "   OpenBLAS $(readlink -f "$lib"): $n sbgemm symbols$([ "$n" = 0 ] && echo ' (built without BUILD_BFLOAT16: no cblas_sbgemm)')"
done
dnnl=()
if [ -e /usr/include/dnnl.h ]; then dnnl=(-DNL_WITH_DNNL -ldnnl); else echo "   oneDNN: not installed (apt-get install libdnnl-dev to measure it)"; fi
${CC:-cc} -std=c11 -D_GNU_SOURCE -O2 -march=x86-64-v2 -fopenmp -Iinclude -Isrc -I/usr/include/x86_64-linux-gnu/openblas-pthread \
  bench/bf16_peak.c -o "$out/bf16_peak" "$build/libneuronlab.a" "$BLAS_DIR/libopenblas.so.0" -Wl,-rpath,"$BLAS_DIR" "${dnnl[@]}" -lm ||
  { echo "bench bf16: bf16_peak does not build"; exit 1; }
"$out/bf16_peak" 2048 5 | tee "$out/bf16_peak.txt" | sed 's/^/   /'
