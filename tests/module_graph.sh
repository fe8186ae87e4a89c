#!/usr/bin/env bash
# module_graph.sh — the dependency rules of docs/ARCHITECTURE.md, checked on every #include.
# Each source file and public header belongs to one module; an #include "..." line is allowed
# when the included header's module is the file's own or one the rules below let it use, and
# a module's private headers (src/<module>/*.h) are included only from inside that module.
# Prints PASS/FAIL per module and one FAIL line per violation (file:line and the edge).
set -u
cd "$(dirname "$0")/.."

# header (public, include/neuronlab/) -> module
declare -A HMOD=(
  [common.h]=core [mpi.h]=core [progress.h]=core [rng.h]=core [atomic_file.h]=core [gguf.h]=core
  [tokenizer.h]=tokenizer
  [model.h]=model [safetensors.h]=model [st_writer.h]=model [export.h]=model
  [forward.h]=forward [hooks.h]=forward [ops.h]=forward [sampler.h]=forward [gemm_bf16.h]=forward
  [dataset.h]=data
  [h5store.h]=store [h5store_mpi.h]=store [results.h]=store [summary_h5.h]=store
  [walk.h]=eval [perplexity.h]=eval [unigram.h]=eval [recorder.h]=eval [summary.h]=eval [imatrix.h]=eval
  [trainer.h]=train [train_config.h]=train [train_model.h]=train [train_ops.h]=train
  [adamw.h]=train [checkpoint.h]=train [token_stream.h]=train [bpe_train.h]=train
  [report.h]=report
  [moe.h]=moe
  [capi.h]=capi
)
# module -> modules it may use (besides itself)
declare -A ALLOW=(
  [core]=""
  [tokenizer]="core"
  [model]="core"
  [forward]="core model"
  [data]="core tokenizer"
  [store]="core"
  [eval]="core model forward data store"
  [train]="core model forward data tokenizer"
  [report]="core store"
  [moe]="core model forward data eval"
  [analyses]="core model forward data store eval moe"
  [cli]="core tokenizer model forward data store eval train report analyses moe"
  [capi]="core tokenizer model forward data eval analyses"
)
# file -> module
module_of_file() {
  case "$1" in
    include/neuronlab/*) echo "${HMOD[$(basename "$1")]:-unknown}" ;;
    src/core/*) echo core ;; src/tokenizer/*) echo tokenizer ;; src/model/*) echo model ;;
    src/forward/*) echo forward ;; src/data/*) echo data ;; src/store/*) echo store ;;
    src/eval/*) echo eval ;; src/train/*) echo train ;; src/report/*) echo report ;; src/moe/*) echo moe ;; src/capi/*) echo capi ;;
    src/cli/*) echo cli ;; analyses/*) echo analyses ;;
    *) echo unknown ;;
  esac
}
# included path -> module
module_of_include() {
  case "$1" in
    neuronlab/*) echo "${HMOD[$(basename "$1")]:-unknown}" ;;
    analyses/*) echo analyses ;;
    cli/*) echo cli ;;
    */*) echo "${1%%/*}" ;;   # private header of src/<module>/
    *) echo local ;;
  esac
}
allowed() { # from to
  [ "$1" = "$2" ] && return 0
  for m in ${ALLOW[$1]}; do [ "$m" = "$2" ] && return 0; done
  return 1
}
declare -A BAD=()
fails=0
files=$(find src analyses include/neuronlab -name '*.[ch]' -not -name 'unicode_tables.c' | sort)
for f in $files; do
  from=$(module_of_file "$f")
  if [ "$from" = unknown ]; then echo "FAIL module-of $f (no module: add it to tests/module_graph.sh and docs/ARCHITECTURE.md)"; fails=$((fails + 1)); continue; fi
  while IFS=: read -r ln inc; do
    inc=${inc#*\"}; inc=${inc%\"*}
    to=$(module_of_include "$inc")
    [ "$to" = local ] && continue
    if [ "$to" = unknown ]; then echo "FAIL include $f:$ln \"$inc\" (header of no module)"; BAD[$from]=1; fails=$((fails + 1)); continue; fi
    private=0; case "$inc" in neuronlab/*|analyses/*) ;; *) private=1 ;; esac
    if [ $private = 1 ] && [ "$to" != "$from" ]; then
      echo "FAIL include $f:$ln \"$inc\" ($from uses a private header of $to)"; BAD[$from]=1; fails=$((fails + 1)); continue
    fi
    if ! allowed "$from" "$to"; then
      echo "FAIL include $f:$ln \"$inc\" ($from may not use $to)"; BAD[$from]=1; fails=$((fails + 1))
    fi
  done < <(grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f")
done
for m in core tokenizer model forward data store eval train report moe analyses cli capi; do
  if [ -n "${BAD[$m]:-}" ]; then echo "FAIL module-graph $m"; else echo "PASS module-graph $m"; fi
done
# every public header is in the map
for h in include/neuronlab/*.h; do
  b=$(basename "$h")
  if [ -z "${HMOD[$b]:-}" ]; then echo "FAIL header-mapped $b"; else :; fi
done
[ $fails -eq 0 ]
