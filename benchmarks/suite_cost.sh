#!/usr/bin/env bash
# What a paper adds to the test suite: `python -m pytest` (as configured: two workers) in a copy of
# the committed tree, then in a copy without the paper (its folder, its notebook, its own test
# files, its root stage); wall and CPU time of each. Run from the repo root after ./setup.sh, on a
# quiet machine (about twice the suite's time): benchmarks/suite_cost.sh PAPER
set -euo pipefail
paper=${1:?usage: benchmarks/suite_cost.sh PAPER (a folder of papers/)}
repo=$(cd "$(dirname "$0")/.." && pwd)
[ -f "$repo/papers/$paper/dvc.yaml" ] || { echo "suite_cost: no papers/$paper/dvc.yaml" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

copy() {  # copy DIR [PAPER to leave out]: the committed tree as a git repo, sharing the .venv
  mkdir "$1" && git -C "$repo" archive HEAD | tar -x -C "$1"
  if [ -n "${2:-}" ]; then
    rm -rf "$1/papers/$2" "$1/notebooks/$2.ipynb" "$1/tests/test_$2.py" "$1/tests/test_$2_model.py"
    "$repo/.venv/bin/python" - "$1/dvc.yaml" "papers/$2" <<'PY'
import sys
from pathlib import Path

import yaml

path, stage = Path(sys.argv[1]), sys.argv[2]
stages = yaml.safe_load(path.read_text())
del stages["stages"][stage]
path.write_text(yaml.safe_dump(stages, sort_keys=False))
PY
  fi
  git -C "$1" init -q && git -C "$1" add -A && git -C "$1" -c user.name=b -c user.email=b@b commit -qm copy
  ln -s "$repo/.venv" "$1/.venv"
}

suite() {  # suite DIR LABEL
  local line
  line=$(cd "$1" && { /usr/bin/time -f "%e %U %S" .venv/bin/python -m pytest -q -p no:cacheprovider \
    > "$work/$2.log" 2> "$work/$2.time"; } && tail -1 "$work/$2.time") \
    || { tail -5 "$work/$2.log" >&2; echo "suite_cost: the suite failed ($2)" >&2; exit 1; }
  read -r wall user sys <<< "$line"
  echo "$2: $(grep -Eo '[0-9]+ passed' "$work/$2.log"), wall $wall s, CPU $(awk "BEGIN { print $user + $sys }") s"
}

copy "$work/with"
copy "$work/without" "$paper"
suite "$work/with" "with $paper"
suite "$work/without" "without $paper"
