#!/usr/bin/env bash
# Wall time of each paper's smoke `dvc repro` (and of a second, no-op one), in a fresh copy of the
# committed tree set to the smoke profiles as tests/test_pipelines.py sets them: what each paper
# adds to the test suite. Run from the repo root after ./setup.sh: benchmarks/smoke_times.sh
# [paper...] (default: every paper).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
for paper in "$@"; do
  [ -f "$repo/papers/$paper/dvc.yaml" ] || { echo "smoke_times: no papers/$paper/dvc.yaml" >&2; exit 2; }
done
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
git -C "$repo" archive HEAD | tar -x -C "$copy"
cd "$copy" && ln -s "$repo/.venv" .venv && git init -q
.venv/bin/python - <<'PY'
from pathlib import Path

from tests.test_pipelines import _edit_yaml, _smoke  # the suite's own smoke settings

_edit_yaml(Path("params.yaml"), lambda p: p["wandb"].update(mode="disabled"))
for params in Path("papers").glob("*/params.yaml"):
    _edit_yaml(params, _smoke)
PY
export PATH="$copy/.venv/bin:/usr/local/bin:/usr/bin:/bin"
seconds() { local start=$SECONDS; "$@" > /dev/null 2>&1; echo $((SECONDS - start)); }
echo "data: $(seconds dvc repro data@fashion_mnist) s"
papers=("$@")
if [ ${#papers[@]} -eq 0 ]; then
  for folder in papers/*/dvc.yaml; do papers+=("$(basename "$(dirname "$folder")")"); done
fi
for paper in "${papers[@]}"; do
  echo "$paper: smoke repro $(seconds dvc repro "papers/$paper") s, again $(seconds dvc repro "papers/$paper") s"
done
