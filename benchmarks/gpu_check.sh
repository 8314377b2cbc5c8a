#!/usr/bin/env bash
# One prepared check of dva on one GPU, offline, from the repository root, in under 9 minutes:
#
#     bash benchmarks/gpu_check.sh [--dry-run] [FOLDER]
#
# Each step runs under its own `timeout`, logs to FOLDER/<step>.log (FOLDER: $OUT when set, else gpu_check/), and
# the script ends with one summary table (FOLDER/summary.md). Random weights throughout: ViT-B-32 (open_clip's own
# config) and AST-base (transformers' ASTConfig(), saved to a local folder), as benchmarks/extract.py builds them.
# Steps: the environment line; a synthetic release-shaped set (one track starts with a whole batch of missing crops)
# extracted with the CPU JPEG decoder and with nvJPEG, and the feature difference between the two; a two-worker Dask
# extraction on the GPU; fit, predict and a two-worker ablation on cuda; benchmarks/extract.py --scale release,
# benchmarks/fit.py on cuda, and its temporal table (gru, tcn, transformer on 64-, 300- and 400-frame windows, 1/16 of
# the release's frames).
# --dry-run: `bash -n`, then every step with --device cpu on tiny sizes (the tiny preset), as the test suite runs it.
set -uo pipefail

SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
FOLDER="${1:-${OUT:-gpu_check}}"
CALL=()  # internal: `--call FUNCTION ARGS...` runs one step's function (timeout runs commands, not functions)
if [[ "${2:-}" == "--call" ]]; then CALL=("${@:3}"); fi
PY="${PYTHON:-python}"
bash -n "$SCRIPT" || exit 2
mkdir -p "$FOLDER"
FOLDER="$(cd "$FOLDER" && pwd)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's dva
SUMMARY="$FOLDER/summary.tsv"

if [[ $DRY == 1 ]]; then
  DEVICE=cpu; NVJPEG=cpu; TRACKS=5; SECONDS_PER_TRACK=4; BATCH=16; EPOCHS=1; QUICK=(--quick); SCALE=3
  ENCODERS=(--preset tiny)
else
  DEVICE=cuda; NVJPEG=cuda; TRACKS=6; SECONDS_PER_TRACK=40; BATCH=64; EPOCHS=5; QUICK=(); SCALE=1  # timeouts sum to 540 s
  ENCODERS=(--clip-model ViT-B-32 --clip-pretrained none --ast-model "$FOLDER/ast-base")
fi
DVA=("$PY" -m dva.cli)
DATA="$FOLDER/data"
COMMON=(--data "$DATA" --device "$DEVICE" --batch-size "$BATCH" "${ENCODERS[@]}")

# step NAME SECONDS COMMAND...: run it under timeout, log it, record status and seconds for the summary
step() {
  local name="$1" limit="$2"; shift 2
  local start=$SECONDS
  if declare -F "$1" > /dev/null; then set -- bash "$SCRIPT" $([[ $DRY == 1 ]] && echo --dry-run) "$FOLDER" --call "$@"; fi
  timeout "$limit" "$@" > "$FOLDER/$name.log" 2>&1
  local rc=$?
  local status=ok
  if [[ $rc == 124 ]]; then status="timed out (${limit} s)"; elif [[ $rc != 0 ]]; then status="failed (exit $rc)"; fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" "$(tail -n 1 "$FOLDER/$name.log" | cut -c1-120)" >> "$SUMMARY"
  echo "$name: $status" >&2
}

environment() {
  "$PY" - <<'EOF'
import platform, torch, torchvision, dva
cuda = torch.cuda.is_available()
name = torch.cuda.get_device_name(0) if cuda else "no CUDA device"
print(f"python {platform.python_version()} torch {torch.__version__} torchvision {torchvision.__version__} CUDA {torch.version.cuda} "
      f"devices {torch.cuda.device_count() if cuda else 0} ({name}) dva {dva.__version__}")
EOF
}

prepare() {  # the synthetic set; the first track loses its first batch of crops (a stretch without a face); AST-base
  "${DVA[@]}" synth "$DATA" --tracks "$TRACKS" --seconds "$SECONDS_PER_TRACK" --seed 0 || return 1
  local first
  first="$(find "$DATA" -type d -path '*cropped_aligned/*' | sort | head -n 1)"
  for ((i = 1; i <= BATCH; i++)); do rm -f "$first/$(printf '%05d' "$i").jpg"; done
  echo "removed crops 1..$BATCH of $first"
  if [[ $DRY == 0 ]]; then
    "$PY" -c "
from transformers import ASTConfig, ASTModel
from dva.pipeline.encoders.base import seeded_init
with seeded_init():
    ASTModel(ASTConfig()).save_pretrained('$FOLDER/ast-base')
print('AST-base, random weights, in $FOLDER/ast-base')"
  fi
}

extract_all() {  # STORE DECODER [extra flags]: every split into STORE
  local store="$1" decoder="$2"; shift 2
  for split in train val test; do
    "${DVA[@]}" extract --split "$split" --out "$store" "${COMMON[@]}" --jpeg-decoder "$decoder" "$@" || return 1
  done
}

decoder_difference() {  # the visual features of the two decoders' stores, track by track
  "$PY" - "$FOLDER/stores/cpu-decoder" "$FOLDER/stores/nvjpeg" <<'EOF'
import sys
import numpy as np
from dva.stores import open_store
a, b = (open_store(path, mode="r") for path in sys.argv[1:3])
name = next(n for n, info in a.feature_sets().items() if info["modality"] == "visual")
worst, cosines = 0.0, []
for track in a.track_index("train"):
    ours, theirs = (s.read_set("train", track, name, "visual") for s in (a, b))
    assert np.array_equal(ours["mask"], theirs["mask"]), f"{track}: the two decoders masked other rows"
    x, y = (np.asarray(part["data"], dtype=np.float32)[ours["mask"]] for part in (ours, theirs))
    worst = max(worst, float(np.abs(x - y).max()) if len(x) else 0.0)
    cosines += list((x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1))
print(f"{name}: max |cpu - nvjpeg| {worst:.4f}, cosine min {min(cosines):.5f} mean {np.mean(cosines):.5f} over {len(cosines)} frames")
EOF
}

run_dir() { find "$FOLDER/runs/fit" -name best.pt -printf '%h\n' 2> /dev/null | head -n 1; }

summary() {
  {
    echo "| step | status | seconds | last line of its log |"
    echo "| --- | --- | ---: | --- |"
    while IFS=$'\t' read -r name status seconds last; do echo "| $name | $status | $seconds | ${last//|/\\|} |"; done < "$SUMMARY"
  } | tee "$FOLDER/summary.md"
}

if [[ ${#CALL[@]} -gt 0 ]]; then "${CALL[@]}"; exit $?; fi

: > "$SUMMARY"
step environment $((20 * SCALE)) environment
step prepare $((40 * SCALE)) prepare
step extract-cpu-decoder $((75 * SCALE)) extract_all "$FOLDER/stores/cpu-decoder" cpu
step extract-nvjpeg $((35 * SCALE)) "${DVA[@]}" extract --split train --out "$FOLDER/stores/nvjpeg" "${COMMON[@]}" --jpeg-decoder "$NVJPEG"
step decoder-difference $((20 * SCALE)) decoder_difference
step extract-dask-2-workers $((50 * SCALE)) "${DVA[@]}" extract --split train --out "$FOLDER/stores/dask" "${COMMON[@]}" --workers 2
step fit $((40 * SCALE)) "${DVA[@]}" fit --features "$FOLDER/stores/cpu-decoder" --out "$FOLDER/runs/fit" --device "$DEVICE" --epochs "$EPOCHS"
step predict $((25 * SCALE)) "${DVA[@]}" predict --run "$(run_dir)" --features "$FOLDER/stores/cpu-decoder" --split test --out "$FOLDER/submission.txt" --device "$DEVICE"
step ablate-2-workers $((50 * SCALE)) "${DVA[@]}" ablate --features "$FOLDER/stores/cpu-decoder" --grid prompt=none,learnable --set device="$DEVICE" --set epochs="$EPOCHS" --workers 2 --out "$FOLDER/ablation"
step bench-extract-release $((90 * SCALE)) "$PY" benchmarks/extract.py --scale release --device "$DEVICE" "${QUICK[@]}"
step bench-fit $((40 * SCALE)) "$PY" benchmarks/fit.py --device "$DEVICE" "${QUICK[@]}"
step bench-fit-temporal $((60 * SCALE)) "$PY" benchmarks/fit.py --temporal gru,tcn,transformer --seq-len 64,300,400 --size 1/16 --device "$DEVICE" "${QUICK[@]}"
summary
! grep -qv $'\tok\t' "$SUMMARY"  # exit 1 when a step did not pass
