#!/usr/bin/env bash
# bench/gpu_check.sh: the CUDA paths of this project checked in one prepared run (issue 18).
#
#   bash bench/gpu_check.sh [--device cuda|cpu] [--out DIR] [--size tiny|full] [--budget SECONDS]
#
# (cuda is the first visible GPU: choose another with CUDA_VISIBLE_DEVICES)
# Steps, each under its own `timeout` and all inside --budget seconds (default 480 on cuda: at most
# 8 minutes on one GPU; 1500 on cpu); a failing step is recorded and the next one runs:
#   env                 Python, torch, torchvision, CUDA, cuDNN, the GPU, its driver (nvidia-smi), this
#                       project's version and commit, the packages below and which are missing
#   cuda_tests          pytest -m cuda tests/cuda (without a GPU they skip, and the step says "skipped")
#   speed               bench/speed.py --device D at batch 1 and 8, float32 and AMP: S4Net-ResNet-50 at
#                       320x320 (each branch window grouping) against torchvision Mask R-CNN R50-FPN (20
#                       detections) and a bare ResNet-50, peak GPU memory each; a row that failed fails the step
#                       (--compile is left out: compiling each batch size and precision does not fit 8 minutes)
#   world               wsss demo-data: the synthetic world the steps below train and score on
#   train_step          bench/train_step.py: S4Net-ResNet-50 training images/s at 320, batch 16, in float32,
#                       bfloat16 and float16 (with a GradScaler)
#   segmenter_step      bench/segmenter_step.py: DeepLabv3-ResNet-101 training images/s, crop 320, batch 16
#   s4net_train         s4net train on D, stopped by SIGTERM once its first checkpoint exists (exit 75) ...
#   s4net_resume        ... and the same command again: it resumes from last.pt and finishes
#   s4net_evaluate_device / s4net_evaluate_cpu   s4net evaluate of that model on D and on the CPU
#   instance_classifier wsss instance-classifier on D (what proxy-labels uses for multi-keyword images)
#   proxy_labels / proxy_labels_crf              wsss proxy-labels on D, without and with --crf
#   train_segmenter     a short wsss train-segmenter on D, on the CRF proxy labels
#   evaluate_segmenter  wsss evaluate of it on the world's VOC val split
# --size tiny shrinks every step to seconds (the CPU check of tests/test_gpu_check.py); full is the
# GPU check above (the demo's "small" world, the paper's sizes for the benches).
#
# Output (DIR, default ${TMPDIR:-/tmp}/gpu_check-DEVICE: outside the working tree, which a device run copies):
#   summary.json    every step: name, command, exit status, seconds, time limit, status (passed, failed,
#                   timed_out, skipped, not_run) and the parsed results of its bench or CLI (the bench
#                   JSONs, pytest's counts, training and proxy-label summaries, the evaluation metrics);
#                   rewritten after each step, so a run cut short keeps what it measured; "ok" at the end
#   gpu_check.log   everything every step printed
#   results/, work/ the raw files and the runs' folders (large: the world, checkpoints, labels)
#
# It installs nothing. It runs with $PYTHON, else ./.venv/bin/python, else python3, with the repository
# root first on PYTHONPATH (the project need not be installed). Packages its steps import (the env step
# lists what is missing and fails then):
#   torch>=2.1 (CUDA build for --device cuda), torchvision, numpy, pillow, scipy, pyyaml, tqdm,
#   segmentation-models-pytorch (with timm, huggingface-hub, safetensors), pycocotools, pydensecrf2, pytest.
# Not needed here: snakemake, matplotlib, hypothesis (listed as optional by the env step).
#
# On the project's GPU machine (nvidia-h200: Python 3.12, torch 2.11+cu130, torchvision 0.26, numpy,
# pillow, scipy, pyyaml, tqdm, timm, huggingface-hub, safetensors and pytest already there; nothing can be
# downloaded there) three wheels travel with the working tree, in the git-ignored folder .whl:
#   segmentation_models_pytorch-0.6.0-py3-none-any.whl
#   pycocotools-2.0.11-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl (or a _2_28 build)
#   pydensecrf2-1.1-cp312-cp312-*.whl   (no wheel on PyPI for every Python: build it with
#                                        `python3.12 -m pip wheel --no-deps pydensecrf2==1.1` on x86-64)
# fetched here with (the device tool's README, .library/device/README.md, gives the full platform list):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl segmentation-models-pytorch==0.6.0 pycocotools==2.0.11
# and one device run (carry [".whl"], timeout_s 600), which copies back the two files that matter:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site || exit; PYTHON=python3 bash bench/gpu_check.sh --device cuda \
#     --out /tmp/gpu_check; cp /tmp/gpu_check/summary.json /tmp/gpu_check/gpu_check.log $OUT/
# (the tool brings back at most 8 files from $OUT, so the run writes elsewhere and copies those two).
# Do not carry .venv there: it holds this machine's CPU build of torch for Python 3.11.

# The whole script is one block, read before it runs: editing the file during a run cannot change that run.
{
set -u -o pipefail

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; }

DEVICE=cuda
OUT=""
SIZE=""
BUDGET=""
while (($#)); do
  case "$1" in
    --device) DEVICE=${2:?--device needs cuda or cpu}; shift 2 ;;
    --out) OUT=${2:?--out needs a folder}; shift 2 ;;
    --size) SIZE=${2:?--size needs tiny or full}; shift 2 ;;
    --budget) BUDGET=${2:?--budget needs seconds}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check: --device must be cuda or cpu, not $DEVICE" >&2; exit 2 ;; esac
[[ -z "$SIZE" ]] && { [[ "$DEVICE" == cpu ]] && SIZE=tiny || SIZE=full; }
case "$SIZE" in tiny|full) ;; *) echo "gpu_check: --size must be tiny or full, not $SIZE" >&2; exit 2 ;; esac
[[ -z "$BUDGET" ]] && { [[ "$DEVICE" == cpu ]] && BUDGET=1500 || BUDGET=480; }
[[ "$BUDGET" =~ ^[0-9]+$ ]] || { echo "gpu_check: --budget must be whole seconds" >&2; exit 2; }
[[ -z "$OUT" ]] && OUT="${TMPDIR:-/tmp}/gpu_check-$DEVICE"

OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd) || { echo "gpu_check: cannot make $OUT" >&2; exit 2; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON
elif [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"
else PY=python3; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg

RESULTS="$OUT/results"
WORK="$OUT/work"
LOG="$OUT/gpu_check.log"
STEPS="$OUT/steps.jsonl"
# a fresh run: the resume step needs a training folder without last.pt; only a folder this script made is removed
if [[ -e "$WORK" && ! -e "$WORK/.gpu_check" ]]; then
  echo "gpu_check: $WORK exists and was not made by this script; use another --out" >&2; exit 2
fi
rm -rf "$WORK" "$RESULTS"
mkdir -p "$WORK" "$RESULTS" && touch "$WORK/.gpu_check"
rm -f "$STEPS" "$OUT/summary.json"
: > "$LOG"
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
DEADLINE=$(( $(date +%s) + BUDGET ))
KILL_AFTER=10  # seconds between timeout's SIGTERM and its SIGKILL (a training run checkpoints on SIGTERM)

S4NET=("$PY" -c 'import sys; from s4net.cli import main; sys.exit(main())')
WSSS=("$PY" -m pipeline.cli)

summarize() {  # summarize record|summary ARGS...: add a step / rewrite summary.json from the steps so far
  local what=$1
  shift
  "$PY" -m bench.gpu_check_helper "$what" --steps "$STEPS" --out "$OUT/summary.json" --device "$DEVICE" \
    --size "$SIZE" --budget "$BUDGET" --started "$STARTED" --log "$(basename "$LOG")" "$@" >> "$LOG" 2>&1 \
    || echo "gpu_check: could not write summary.json (see $LOG)" >&2
}

step() {  # step NAME LIMIT_S RESULTS_SPEC CMD...: run CMD under timeout, append to the log, record it
  local name=$1 limit=$2 results=$3
  shift 3
  local command remaining start end status seconds
  command=$(printf '%q ' "$@")
  remaining=$(( DEADLINE - $(date +%s) - KILL_AFTER ))
  if (( remaining < 5 )); then
    echo "==== [$name] not run: the --budget of ${BUDGET}s is spent" >> "$LOG"
    printf '%-22s not run (budget spent)\n' "$name"
    summarize record --name "$name" --status - --seconds 0 --limit 0 --command "$command"
    return
  fi
  (( limit > remaining )) && limit=$remaining
  echo "==== [$name] $(date -u +%H:%M:%S) limit ${limit}s: $command" >> "$LOG"
  start=$(date +%s.%N)
  timeout --kill-after="$KILL_AFTER" "$limit" "$@" >> "$LOG" 2>&1 < /dev/null
  status=$?
  end=$(date +%s.%N)
  seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
  echo "==== [$name] exit status $status after ${seconds}s" >> "$LOG"
  printf '%-22s exit %-4s %7ss\n' "$name" "$status" "$seconds"
  summarize record --name "$name" --status "$status" --seconds "$seconds" --limit "$limit" --results "$results" \
    --command "$command"
}

# ------------------------------------------------------------------------------------------ sizes
if [[ "$SIZE" == full ]]; then
  SCALE=small WORKERS=8 THREADS=8
  SPEED_ARGS=(--size 320 --batch 1 8 --amp --groupings auto cost coarse single --backbones --proposals 1 20
              --repeats 10 --warmup 3)
  STEP_ARGS=(--model-config workflows/configs/s4net_r50_model.yaml --size 320 --batch 16 --precisions fp32 bf16 fp16
             --repeats 5 --warmup 2)
  SEG_STEP_ARGS=(--arch deeplabv3 --encoder resnet101 --batch-size 16 --crop 320 --steps 12 --warmup 2 --amp)
  MODEL_CONFIG=workflows/configs/s4net_demo_model.yaml
  TRAIN_ARGS=(--size 128 --batch-size 8 --iterations 100 --checkpoint-every 25 --log-every 5)
  PROXY_BATCH=16
  CLASSIFIER_ARGS=(--epochs 300)  # the default
  SEGMENTER_ARGS=(--arch deeplabv3plus --encoder resnet18 --iterations 100 --batch-size 16 --crop 128 --log-every 10)
  T_ENV=90 T_TESTS=150 T_SPEED=150 T_WORLD=90 T_STEP=120 T_SEG_STEP=150 T_TRAIN=90 T_EVAL=90 T_PROXY=120
  T_SEGMENTER=120
else
  SCALE=tiny WORKERS=1 THREADS=2
  # Mask R-CNN left out here: its first bfloat16 forward alone takes half a minute on a 2-core CPU
  SPEED_ARGS=(--size 64 --batch 1 --amp --skip-memory --skip-maskrcnn --backbones --proposals 1 --repeats 1 --warmup 0)
  MODEL_CONFIG="$WORK/s4net_tiny_model.yaml"
  STEP_ARGS=(--model-config "$MODEL_CONFIG" --size 64 --batch 2 --precisions fp32 bf16 --repeats 1 --warmup 0
             --skip-memory)
  SEG_STEP_ARGS=(--arch deeplabv3 --encoder resnet18 --batch-size 2 --crop 64 --steps 1 --warmup 0 --skip-memory)
  TRAIN_ARGS=(--size 64 --batch-size 2 --iterations 6 --checkpoint-every 2 --log-every 1)
  PROXY_BATCH=4
  CLASSIFIER_ARGS=(--epochs 20)
  SEGMENTER_ARGS=(--arch deeplabv3plus --encoder resnet18 --iterations 4 --batch-size 2 --crop 64 --log-every 1)
  T_ENV=120 T_TESTS=240 T_SPEED=420 T_WORLD=120 T_STEP=240 T_SEG_STEP=300 T_TRAIN=240 T_EVAL=180 T_PROXY=240
  T_SEGMENTER=240
  # a small S4Net (random init, 64 px): the CLI paths at test speed
  cat > "$MODEL_CONFIG" <<'YAML'
backbone: resnet18
norm: bn
fpn_channels: 32
head_channels: 32
compress_channels: 16
branch_channels: [16, 8]
YAML
fi
WORLD="$WORK/world"
RUN="$WORK/s4net"
TRAIN=("${S4NET[@]}" train --annotations "$WORLD/salient/train.json" --images "$WORLD/salient/images" --out "$RUN"
       --model-config "$MODEL_CONFIG" "${TRAIN_ARGS[@]}" --lr 0.01 --lr-steps 10000 --device "$DEVICE"
       --workers "$WORKERS" -q)
# loose cue thresholds (tests/helpers.py LOOSE_CUES): a briefly trained S4Net still paints classes
CUES=(--score-threshold 0 --min-area 0 --foreground 0.5 --background 0.45)
IMAGES=(--checkpoint "$RUN/model_final.pt" --images "$WORLD/imagenet" --keywords "$WORLD/imagenet/keywords.csv"
        --batch-size "$PROXY_BATCH" --device "$DEVICE")
CLASSIFIER="$WORK/instance_classifier.pt"
PROXY=("${WSSS[@]}" proxy-labels "${IMAGES[@]}" --classifier "$CLASSIFIER" --workers "$WORKERS" "${CUES[@]}" -q)

echo "gpu_check: --device $DEVICE --size $SIZE --budget ${BUDGET}s, python $PY, out $OUT"
echo "gpu_check: --device $DEVICE --size $SIZE --budget ${BUDGET}s, python $PY, out $OUT, root $ROOT" >> "$LOG"

# ------------------------------------------------------------------------------------------ steps
step env "$T_ENV" "json:$RESULTS/env.json" \
  "$PY" -m bench.gpu_check_helper env --device "$DEVICE" --out "$RESULTS/env.json"
step cuda_tests "$T_TESTS" "junit:$RESULTS/cuda_tests.xml" \
  "$PY" -m pytest -m cuda tests/cuda -q -rs -p no:cacheprovider --junitxml="$RESULTS/cuda_tests.xml"
step speed "$T_SPEED" "json:$RESULTS/speed.json" \
  "$PY" -m bench.speed --device "$DEVICE" "${SPEED_ARGS[@]}" --threads "$THREADS" --out "$RESULTS/speed.json"
step world "$T_WORLD" - \
  "${WSSS[@]}" demo-data --out "$WORLD" --scale "$SCALE" --workers "$WORKERS" -q
step train_step "$T_STEP" "json:$RESULTS/train_step.json" \
  "$PY" -m bench.train_step --device "$DEVICE" "${STEP_ARGS[@]}" --threads "$THREADS" --out "$RESULTS/train_step.json"
step segmenter_step "$T_SEG_STEP" "json:$RESULTS/segmenter_step.json" \
  "$PY" -m bench.segmenter_step --world "$WORLD" --device "$DEVICE" "${SEG_STEP_ARGS[@]}" --workers "$WORKERS" \
  --threads "$THREADS" --out "$RESULTS/segmenter_step.json"
step s4net_train "$T_TRAIN" "train:$RUN" \
  "$PY" -m bench.gpu_check_helper preempt --watch "$RUN/checkpoints/last.pt" -- "${TRAIN[@]}"
step s4net_resume "$T_TRAIN" "train:$RUN" "${TRAIN[@]}"
for where in device cpu; do
  [[ $where == device ]] && on=$DEVICE || on=cpu
  step "s4net_evaluate_$where" "$T_EVAL" "json:$RESULTS/s4net_evaluate_$where.json" \
    "${S4NET[@]}" evaluate --annotations "$WORLD/salient/test.json" --images "$WORLD/salient/images" \
    --checkpoint "$RUN/model_final.pt" --out "$RESULTS/s4net_evaluate_$where.json" --device "$on" -q
done
step instance_classifier "$T_EVAL" - \
  "${WSSS[@]}" instance-classifier "${IMAGES[@]}" --out "$CLASSIFIER" "${CLASSIFIER_ARGS[@]}" "${CUES[@]}" -q
step proxy_labels "$T_PROXY" "proxy:$WORK/proxy" "${PROXY[@]}" --out "$WORK/proxy"
step proxy_labels_crf "$T_PROXY" "proxy:$WORK/proxy_crf" "${PROXY[@]}" --crf --out "$WORK/proxy_crf"
step train_segmenter "$T_SEGMENTER" "train:$WORK/segmenter" \
  "${WSSS[@]}" train-segmenter --images "$WORLD/imagenet" --labels "$WORK/proxy_crf/labels" --out "$WORK/segmenter" \
  "${SEGMENTER_ARGS[@]}" --device "$DEVICE" --workers "$WORKERS" -q
step evaluate_segmenter "$T_EVAL" "json:$RESULTS/segmenter_evaluate.json" \
  "${WSSS[@]}" evaluate --checkpoint "$WORK/segmenter/model_final.pt" --voc-root "$WORLD/voc/VOC2012" --split val \
  --out "$RESULTS/segmenter_evaluate.json" --device "$DEVICE" -q

summarize summary --finished
"$PY" - "$OUT/summary.json" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
print(f"gpu_check: {'ok' if summary['ok'] else 'NOT ok: ' + ', '.join(summary['not_ok'])}; "
      f"{summary['seconds']:.0f} s of steps; {sys.argv[1]}")
sys.exit(0 if summary["ok"] else 1)
PY
exit $?
}
