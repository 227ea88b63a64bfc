#!/usr/bin/env bash
# The GPU path checked on a lent GPU machine in one go, within ~7.5 minutes: the CUDA tests,
# training throughput on the GPU (ours, bare loop, tight loop; bf16 + channels_last; ResNet-20 and
# ResNet-110 at batch 128 and 512), a paper-protocol run of ResNet-20 on the whole Fashion-MNIST
# training set, and every paper profile's projected GPU hours. No DVC, no W&B, no network: the
# prepared data/fashion_mnist.pt travels with the tree. Writes under $OUT (else a temporary
# folder): gpu_check.log (everything), summary.md (the figures, ready to paste), projection.json
# and the paper-protocol run's files. See benchmarks/README.md.
#
#   benchmarks/gpu_check.sh                 # on the GPU machine (its python3 holds torch)
#   benchmarks/gpu_check.sh --dry-run       # here, on the CPU, tiny sizes: proves the wiring
#   benchmarks/gpu_check.sh --fetch-wheels  # here: wheels of what the GPU image lacks, into .whl/
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

die() {
  echo "error: $*" >&2
  exit 2
}

mode=gpu
case "${1:-}" in
  "") ;;
  --dry-run) mode=dry ;;
  --fetch-wheels) mode=wheels ;;
  -h | --help)
    sed -n '2,12p' "$0" | cut -c3-
    exit 0
    ;;
  *) die "unknown option '$1' (allowed: --dry-run, --fetch-wheels, --help)" ;;
esac
[ $# -le 1 ] || die "one option at most (allowed: --dry-run, --fetch-wheels, --help)"

WHEELS=${GPU_CHECK_WHEELS:-.whl}
# What the GPU machine's image lacks of the project's imports (its package list:
# /work/.library/device/KINDS.md): pydantic and what it needs, at the versions constraints.txt pins.
LACKING="pydantic pydantic_core annotated-types typing-inspection typing_extensions"

if [ "$mode" = wheels ]; then
  pins=()
  for name in $LACKING; do
    pin=$(grep -i "^${name}==" constraints.txt) || die "$name is not pinned in constraints.txt"
    pins+=("$pin")
  done
  PY=${PYTHON:-.venv/bin/python}
  exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHEELS" "${pins[@]}"
fi

if [ "$mode" = dry ]; then
  PY=${PYTHON:-.venv/bin/python}
  DEVICE=cpu
else
  PY=${PYTHON:-python3}
  DEVICE=cuda
fi
[ -f data/fashion_mnist.pt ] || die "data/fashion_mnist.pt is missing: prepare it (dvc repro \
data/dvc.yaml:data@fashion_mnist) and let it travel (the device tool's carry)"

OUT=${OUT:-$(mktemp -d -t gpu_check.XXXXXX)}
mkdir -p "$OUT" || die "cannot create $OUT"
WORK=$(mktemp -d -t gpu_check_work.XXXXXX) || die "cannot create a temporary folder"
trap 'rm -rf "$WORK"' EXIT
exec > >(tee "$OUT/gpu_check.log") 2>&1

export WANDB_MODE=disabled PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" # the repo is not pip-installed there
if ! "$PY" -c "import pydantic" 2>/dev/null; then
  compgen -G "$WHEELS/*.whl" >/dev/null || die "$PY lacks pydantic and $WHEELS/ holds no wheels: \
run benchmarks/gpu_check.sh --fetch-wheels where PyPI is reachable, and let $WHEELS/ travel"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" "$WHEELS"/*.whl || die "installing $WHEELS/*.whl failed"
  export PYTHONPATH="$WORK/site:$PYTHONPATH"
fi

START=$SECONDS
DEADLINE=$((START + ${GPU_CHECK_BUDGET_S:-450}))

# stage NAME CAP_S COMMAND...: run COMMAND for at most CAP_S seconds (less if the whole check's
# budget ends sooner), its output also in $WORK/NAME.txt; returns its exit status.
stage() {
  local name=$1 cap=$2 left rc begin
  shift 2
  left=$((DEADLINE - SECONDS))
  ((left < cap)) && cap=$left
  if ((cap < 15)); then
    echo "## $name: not run (the check's time budget is spent)" | tee "$WORK/$name.txt"
    return 124
  fi
  echo
  echo "## $name (at $((SECONDS - START)) s; at most $cap s)"
  begin=$SECONDS
  timeout --kill-after=10 "$cap" "$@" 2>&1 | tee "$WORK/$name.txt"
  rc=${PIPESTATUS[0]}
  ((rc == 124)) && echo "## $name: stopped at its $cap s limit"
  echo "## $name: exit $rc after $((SECONDS - begin)) s"
  return "$rc"
}

echo "# GPU check ($mode), $(date -u '+%Y-%m-%d %H:%M UTC')"
command -v nvidia-smi >/dev/null && nvidia-smi -L
"$PY" -c "import sys, torch, lightning; print('python', sys.version.split()[0], '| torch', \
torch.__version__, '| lightning', lightning.__version__, '| CUDA GPU:', torch.cuda.is_available() \
and torch.cuda.get_device_name())"
if [ "$mode" = gpu ]; then
  "$PY" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null ||
    die "torch sees no CUDA GPU here (--dry-run checks the wiring on a CPU)"
fi

# 1. The CUDA tests (in one process: -n 0), and the projection's own tests.
stage tests 150 "$PY" -m pytest tests/test_gpu.py tests/test_gpu_check.py -n 0 -p no:cacheprovider

# 2. Throughput: ours / bare / tight, bf16 + channels_last (precision auto), two depths, two batches.
if [ "$mode" = dry ]; then
  sizes=("20 16")
  tiny=(--images 64 --steps 2 --warmup 1 --rounds 1)
else
  sizes=("20 128" "20 512" "110 128" "110 512")
  tiny=(--rounds 3)
fi
for size in "${sizes[@]}"; do
  read -r depth batch <<<"$size"
  stage "throughput_resnet${depth}_b${batch}" 75 "$PY" benchmarks/throughput.py --device "$DEVICE" \
    --depth "$depth" --batch "$batch" --no-peer "${tiny[@]}"
done

# 3. The paper protocol (ResNet-20, option A, batch 128, LR 0.1, the whole training set, the test
# set evaluated each epoch) for a few epochs, through `python -m common.train` as DVC runs it.
run_dir=$WORK/gpu_check/runs/resnet20
mkdir -p "$WORK/gpu_check"
if [ "$mode" = dry ]; then
  epochs=2 accelerator=cpu subset="train_size: 512, test_size: 256, "
else
  epochs=3 accelerator=auto subset=""
fi
cat >"$WORK/gpu_check/params.yaml" <<EOF
# Written by benchmarks/gpu_check.sh: papers/resnet's paper protocol on Fashion-MNIST, $epochs epochs.
profile: gpu_check
datasets: [fashion_mnist]
seeds: [0]
arms: [resnet20]
networks:
  resnet20: {model: {depth: 20}}
profiles:
  gpu_check:
    model: {class_path: papers.resnet.model.CifarResNet, shortcut: A}
    data: {${subset}val_size: 0, pad: 4, padding_mode: zeros, flip: true, normalize: per_pixel_mean}
    optim: {batch_size: 128, lr: 0.1, momentum: 0.9, nesterov: false, weight_decay: 0.0001}
    schedule: {unit: epoch, epochs: $epochs, milestones: [], gamma: 0.1}
    select: last
    callbacks: {epoch_wall: {class_path: benchmarks.gpu_projection.EpochWall}}
    trainer: {accelerator: $accelerator, precision: auto, channels_last: true}
    wandb: {mode: disabled}
    datasets: {fashion_mnist: {}}
EOF
stage paper_run 100 "$PY" -m common.train --params "$WORK/gpu_check/params.yaml" \
  --shared params.yaml --arm resnet20 --dataset fashion_mnist --seed 0 \
  --data data/fashion_mnist.pt --out "$run_dir"
for f in history.csv metrics.json epoch_wall_s.json; do
  [ -f "$run_dir/$f" ] && cp "$run_dir/$f" "$OUT/paper_run_$f"
done

# 4. Every paper profile's GPU hours: steps × measured step time × the paper run's overhead.
if [ "$mode" = dry ]; then
  projection=(--device cpu --papers resnet,node --warmup 1 --steps 1 --max-batch 2 --budget-s 45)
else
  # Start no network's timing in the last 30 s of the stage: the one under way and the tables.
  left=$((DEADLINE - SECONDS < 170 ? DEADLINE - SECONDS - 30 : 140))
  projection=(--device cuda --budget-s $((left > 10 ? left : 10)))
fi
paper_run=()
[ -f "$run_dir/metrics.json" ] && paper_run=(--paper-run "$run_dir")
stage projection 170 "$PY" benchmarks/gpu_projection.py "${projection[@]}" "${paper_run[@]}" \
  --out-json "$OUT/projection.json"

# The figures, ready to paste: the tests' outcome and every table.
{
  echo "# GPU check ($mode), $(date -u '+%Y-%m-%d %H:%M UTC'), $((SECONDS - START)) s"
  echo
  command -v nvidia-smi >/dev/null && nvidia-smi -L && echo
  echo "## CUDA tests"
  echo
  grep -E "^(SKIPPED|FAILED|ERROR|XPASS|XFAIL)|^=+ .*(passed|failed|error|skipped)" "$WORK/tests.txt"
  for size in "${sizes[@]}"; do
    read -r depth batch <<<"$size"
    file=$WORK/throughput_resnet${depth}_b${batch}.txt
    echo
    echo "## Throughput: $(head -n 1 "$file")"
    echo
    grep -E "^(before|after):" "$file"
    echo
    grep -E "^\|" "$file"
  done
  echo
  echo "## Paper-protocol run and projected GPU hours"
  echo
  grep -vE "^  |^## " "$WORK/projection.txt"
} >"$OUT/summary.md"
echo
echo "==================== summary ($OUT/summary.md) ===================="
cat "$OUT/summary.md"
