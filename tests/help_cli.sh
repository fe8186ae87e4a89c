#!/usr/bin/env bash
# help_cli.sh — every command's help and the options every command shares:
#   - `neuronlab CMD --help` equals `neuronlab help CMD` (exit 0) for every command of
#     `neuronlab --help`;
#   - every option of the usage line is described in the help (a line of its own with a
#     meaning), every option with a value that is not required names its default;
#   - every option the command's parser accepts (nl_cli_opt / strcmp names and the shared
#     NL_CLI_* options in src/cli/cmd_<name>.c, the forward-pass options of run.c for the
#     commands that use nl_cli_run_arg) is described, and the help describes no option the
#     parser does not accept;
#   - progress: with stderr not a TTY, a run longer than $NEURONLAB_PROGRESS_SECONDS writes
#     "neuronlab: ppl: done/total tok (p%), rate tok/s, ETA m:ss" lines; --quiet (any command)
#     and a short run with the default period write none;
#   - a label the data does not have: the error suggests --abilities.
# Prints PASS/FAIL lines (read by scripts/run-tests.sh).
set -u
cd "$(dirname "$0")/.."
nl=${NL_BUILD:-build}/neuronlab
py=/usr/bin/python3; [ -x "$py" ] || py=python3
tmp=$(mktemp -d /tmp/nl_help.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
ok() { if [ "$1" = 0 ]; then echo "PASS $2"; else echo "FAIL $2"; sed 's/^/    /' "$tmp/why" 2>/dev/null | head -12; fi; }

cmds=$("$nl" --help | awk '/^  [a-z]/ {print $1}')
[ "$(echo "$cmds" | wc -l)" -ge 14 ]
ok $? "neuronlab --help lists the commands ($(echo $cmds | wc -w))"

for c in $cmds; do
  : > "$tmp/why"
  "$nl" "$c" --help > "$tmp/h1" 2>> "$tmp/why"; r1=$?
  "$nl" help "$c" > "$tmp/h2" 2>> "$tmp/why"; r2=$?
  [ $r1 = 0 ] && [ $r2 = 0 ] && cmp -s "$tmp/h1" "$tmp/h2" || { echo "exit $r1/$r2 or different text" >> "$tmp/why"; false; }
  rc=$?
  [ $rc = 0 ] && $py - "$c" "$tmp/h1" >> "$tmp/why" 2>&1 <<'PY'
import os, re, sys
cmd, helpfile = sys.argv[1], sys.argv[2]
text = open(helpfile).read()
lines = text.splitlines()
assert lines[0].startswith(f"usage: neuronlab {cmd} "), lines[0]
usage = lines[0][len(f"usage: neuronlab {cmd} "):]
# the described options: "  NAME[, ALIAS] [ARG]   meaning (default: …)"
described = {}
body, section = [], False
for l in lines:
    if l in ("arguments and options:", "every command:"): section = True; continue
    if section and l.startswith("  "): body.append(l)
    elif section and not l: section = False
prev = []
for l in body:
    if l.startswith("    ") and prev:  # the meaning on the next line of a long option
        for o in prev: described[o] = l.strip()
        prev = []; continue
    m = re.match(r"  (\S.*?)(?:\s{2,}(\S.*))?$", l)
    names, meaning = m.group(1), m.group(2) or ""
    opts = re.findall(r"(?:^|, )(-{1,2}[A-Za-z][\w-]*)", names) or [names.split()[0]]
    for o in opts: described[o] = meaning
    prev = opts if not meaning else []
in_usage = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", usage))
for o in sorted(in_usage):
    assert o in described, f"{cmd}: {o} of the usage line is not described"
    assert len(described[o]) >= 8, f"{cmd}: {o} has no meaning: '{described[o]}'"
# required (unbracketed) options have no default; bracketed ones with a value must name one
for m in re.finditer(r"\[(--?[A-Za-z][\w-]*) [^\]]+\]", usage):
    o = m.group(1)
    assert "(default: " in described[o], f"{cmd}: {o} takes a value but names no default"
# the parser's options
src = open(f"src/cli/cmd_{cmd.replace('-', '_')}.c").read()
accepted = set(re.findall(r'nl_cli_opt\([^"]*"(-[^"]+)"', src))
accepted |= set(re.findall(r'strcmp\(argv\[\w+\], "(-[^"]+)"\)', src))
bits = {"NL_CLI_DB": "--db", "NL_CLI_JSON": "--json", "NL_CLI_THREADS": "--threads", "NL_CLI_TOP": "--top",
        "NL_CLI_SCORES": "--scores", "NL_CLI_SEED": "--seed"}
for call in re.findall(r"nl_cli_common_arg\(([^;]*)\)", src):
    accepted |= {v for k, v in bits.items() if re.search(rf"\b{k}\b", call)}
if "nl_cli_run_arg(" in src:
    run = open("src/cli/run.c").read()
    accepted |= set(re.findall(r'\{"(--[a-z-]+)", \d', run)) | set(re.findall(r'nl_cli_opt\([^"]*"(-[^"]+)"', run))
if "nl_cli_moe_arg(" in src:  # the --moe options, parsed in options.c
    opt = open("src/cli/options.c").read()
    body = opt[opt.index("int nl_cli_moe_arg("):]
    body = body[:body.index("\n}\n")]
    accepted |= set(re.findall(r'nl_cli_opt\([^"]*"(-[^"]+)"', body))
accepted -= {"-h", "--help"}
assert accepted, f"{cmd}: no options found in its source"
opts_described = {o for o in described if o.startswith("-")}
missing = accepted - opts_described
assert not missing, f"{cmd}: the parser accepts {sorted(missing)} but --help does not describe them"
extra = opts_described - accepted - {"--quiet", "-h", "--help"}
assert not extra, f"{cmd}: --help describes {sorted(extra)} that the parser does not accept"
assert "--quiet" in described and "-h" in described, f"{cmd}: the shared options are not listed"
print(f"{cmd}: {len(accepted)} options")
PY
  rc=$?
  ok $rc "$c --help = help $c: every usage option and every parsed option described, defaults named"
done

# --quiet is accepted by every command (taken out before the command parses)
"$nl" info tests/fixtures/hf/llama --quiet > "$tmp/i1" 2> "$tmp/why" && "$nl" info tests/fixtures/hf/llama > "$tmp/i2" 2>> "$tmp/why" &&
  cmp -s "$tmp/i1" "$tmp/i2"
ok $? "--quiet is accepted by a command that has no progress (info)"

# progress lines when stderr is not a TTY
$py - "$tmp/d.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(40):
        f.write(json.dumps({"tokens": [1] + [(7 * i + 3 * t) % 250 + 2 for t in range(60)], "label": "ab"[i % 2]}) + "\n")
PY
NEURONLAB_PROGRESS_SECONDS=0.000001 "$nl" ppl tests/fixtures/hf/llama "$tmp/d.jsonl" --batch 16 --threads 1 > /dev/null 2> "$tmp/why"
grep -qE '^neuronlab: ppl: [0-9]+/2440 tok \([0-9]+%\), [0-9.]+k? tok/s, ETA [0-9]+:[0-9]{2}$' "$tmp/why" &&
  tail -1 "$tmp/why" | grep -q '^neuronlab: ppl: 2440/2440 tok (100%)' && ! grep -q $'\r' "$tmp/why" &&
  [ "$(grep -c '^neuronlab: ppl: ' "$tmp/why")" -ge 2 ]
ok $? "ppl with stderr in a file: progress lines every period and a final one ($(grep -c '^neuronlab: ppl: ' "$tmp/why") lines)"
NEURONLAB_PROGRESS_SECONDS=0.000001 "$nl" ppl tests/fixtures/hf/llama "$tmp/d.jsonl" --batch 16 --threads 1 --quiet > /dev/null 2> "$tmp/why"
[ $? = 0 ] && [ ! -s "$tmp/why" ]
ok $? "ppl --quiet writes no progress"
"$nl" ppl tests/fixtures/hf/llama "$tmp/d.jsonl" > /dev/null 2> "$tmp/why"
[ $? = 0 ] && ! grep -q '^neuronlab: ppl: ' "$tmp/why"
ok $? "a run shorter than the default period (10 s) writes no progress"

# a label the data does not have: the error names the option that fixes it
"$nl" record tests/fixtures/hf/llama "$tmp/d.jsonl" -o "$tmp/a.h5" --pool > /dev/null 2> "$tmp/why" &&
"$nl" ability "$tmp/a.h5" --db "$tmp/r.db" --abilities a,poetry > /dev/null 2> "$tmp/why"
[ $? = 1 ] && grep -q "has no document labelled 'poetry' (use --abilities to choose labels that the data has)" "$tmp/why" &&
  [ "$(wc -l < "$tmp/why")" = 1 ]
ok $? "a label missing from the data: the error suggests --abilities"
exit 0
