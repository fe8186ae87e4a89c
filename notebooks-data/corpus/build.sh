#!/usr/bin/env bash
# build.sh — build the labelled training corpus (build/corpus/train.jsonl, val.jsonl,
# manifest.json; not committed) and the eval sets (notebooks-data/eval/*.jsonl; committed)
# for the model zoo, from the text that Debian packages carry plus generated math.
#
#   notebooks-data/corpus/build.sh [--seed N] [--cap-mb MB] [--val-frac F] [--eval-docs N]
#                                  [--out DIR] [--eval-dir DIR] [--no-install]
#
# Installs the Debian packages it reads when missing (idempotent; as root it runs apt-get,
# otherwise it prints the exact command and exits 1). Same packages + same seed give
# byte-identical files. With a seed other than the default 1234 the eval sets are written
# to build/corpus/eval/ unless --eval-dir is given, so the committed ones stay as they are.
# Checked by check.py. Details: README.md and SOURCES.md beside this script.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py=/usr/bin/python3

# The packages whose files are read (see SOURCES.md for what each gives and its licence).
pkgs=(
  # code
  libpython3.11-minimal libpython3.11-stdlib libc6-dev linux-libc-dev libsqlite3-dev zlib1g-dev
  bash-completion git gzip xz-utils bzip2 debianutils dpkg libc-bin
  # knowledge
  wordnet-base dict-gcide dict-elements
  # translation (gettext catalogs)
  apt bash binutils-common coreutils diffutils findutils gettext gnupg-l10n grep iso-codes
  libapt-pkg6.0 libc-l10n login make man-db procps sed tar wget
  # linguistic
  fortunes-de fortunes-es fortunes-it fortunes-ru fortunes-pl fortunes-br
  wfrench wngerman wspanish witalian wdutch
  # writing and ethics
  bible-kjv bible-kjv-text fortunes fortunes-min doc-debian miscfiles base-files
)

seed=1234
eval_dir=""
install=1
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seed) seed="$2"; shift 2 ;;
    --eval-dir) eval_dir="$2"; shift 2 ;;
    --no-install) install=0; shift ;;
    --cap-mb|--val-frac|--eval-docs|--out|--math-per-family|--words-per-lang)
      args+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$eval_dir" ]; then
  if [ "$seed" = 1234 ]; then eval_dir=notebooks-data/eval; else eval_dir=build/corpus/eval; fi
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  cmd="apt-get install -y --no-install-recommends ${missing[*]}"
  if [ "$install" = 0 ] || [ "$(id -u)" -ne 0 ]; then
    echo "build.sh: the corpus needs these Debian packages; run as root:" >&2
    echo "  apt-get update && $cmd" >&2
    exit 1
  fi
  echo "build.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2 || true
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

cd "$root"
PYTHONHASHSEED=0 LC_ALL=C.UTF-8 "$py" "$here/build.py" --root "$root" --seed "$seed" \
  --eval-dir "$eval_dir" --packages "${pkgs[*]}" "${args[@]+"${args[@]}"}"
