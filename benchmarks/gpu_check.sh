#!/usr/bin/env bash
# GPU check of the cost benchmarks: train_cost.py and infer_cost.py on one
# CUDA device with bf16 autocast at batch 64, JSON written to OUT_DIR.
#
# Made for a GPU machine that has python3 + torch (CUDA) but none of mmengine,
# mmcv, mmpretrain or open_clip and no network. Those travel as wheels in
# <repo>/.whl/ (make them here with `bash benchmarks/gpu_check.sh pack`); the
# run installs the ones the machine lacks into /tmp/site with
#     python3 -m pip install -q --no-index --no-deps --target /tmp/site <wheels>
# and puts /tmp/site and the repo on PYTHONPATH (mmdmpt runs from the repo).
# Wheels of packages the machine already has (torchvision, numpy, pillow, ...)
# are skipped so that its own, matching builds are used.
#
# Usage (from anywhere):
#     bash benchmarks/gpu_check.sh [OUT_DIR]       # run; default work_dirs/gpu_check
#     bash benchmarks/gpu_check.sh pack            # fill .whl/ on a machine with the venv
#
# Environment knobs (defaults): PYTHON (python3), WHL_DIR (<repo>/.whl),
# SITE_DIR (/tmp/site), DEVICE (cuda), AMP (bf16), BATCH (64),
# TRAIN_STEPS (10), INFER_STEPS (20), EXTRA_ARGS (none; e.g. --tiny for a
# smoke run), INSTALL_TIMEOUT (120 s), TRAIN_TIMEOUT (240 s),
# INFER_TIMEOUT (120 s): every stage has a hard limit and the whole run
# stays within 8 minutes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WHL_DIR="${WHL_DIR:-$ROOT/.whl}"
SITE_DIR="${SITE_DIR:-/tmp/site}"
DEVICE="${DEVICE:-cuda}"
AMP="${AMP:-bf16}"
BATCH="${BATCH:-64}"
TRAIN_STEPS="${TRAIN_STEPS:-10}"
INFER_STEPS="${INFER_STEPS:-20}"
EXTRA_ARGS="${EXTRA_ARGS:-}"
INSTALL_TIMEOUT="${INSTALL_TIMEOUT:-120}"
TRAIN_TIMEOUT="${TRAIN_TIMEOUT:-240}"
INFER_TIMEOUT="${INFER_TIMEOUT:-120}"

log() { echo "[gpu_check $(date +%H:%M:%S)] $*"; }

# ---------------------------------------------------------------- pack mode
if [[ "${1:-}" == "pack" ]]; then
    # Wheels of every distribution the benchmarks import, at the versions
    # installed here, minus torch itself and its own dependencies (the GPU
    # machine has those). Run with the project's venv python.
    PYTHON="${PYTHON_PACK:-$ROOT/.venv/bin/python}"
    mkdir -p "$WHL_DIR"
    log "collecting the distributions the benchmarks import (python: $PYTHON)"
    REQS="$(mktemp)"
    (cd "$ROOT" && PYTHONPATH="$ROOT/benchmarks:$ROOT" "$PYTHON" - "$REQS" > /dev/null <<'PY'
import importlib.metadata as md
import sys

import torch

before = set(sys.modules)
import bench_utils as bu  # noqa: E402
import infer_cost  # noqa: E402
import train_cost  # noqa: E402

args = train_cost.parse_args(['--tiny'])
bu.build_model(train_cost.variant_model_cfg(args, 'dmpt'), torch.device('cpu'))
bu.make_batch(2, 3, (64, 32), torch.device('cpu'))
cfg = bu.load_model_cfg(infer_cost.parse_args([]).config, tiny=True, quick_gelu='true')
infer_cost.build_bare_visual(cfg['backbone'])
# torch and what it depends on are on the GPU machine already.
skip = {'torch', 'triton', 'mmdmpt', 'sympy', 'mpmath', 'networkx', 'jinja2', 'markupsafe',
        'filelock', 'fsspec', 'typing-extensions', 'setuptools'}
top = md.packages_distributions()
lines, names = [], set()
for module in set(sys.modules) - before:
    names.update(top.get(module.split('.')[0], []))
for name in sorted(names, key=str.lower):
    key = name.lower().replace('_', '-')
    if key in skip or key.startswith(('nvidia-', 'cuda-')):
        continue
    version = md.version(name)
    if key == 'opencv-python':  # no libGL on a bare machine
        name = 'opencv-python-headless'
    lines.append(f'{name}=={version}')
with open(sys.argv[1], 'w') as f:
    f.write('\n'.join(lines) + '\n')
PY
    )
    log "wheels for: $(tr '\n' ' ' < "$REQS")"
    "$PYTHON" -m pip wheel -q --no-deps -w "$WHL_DIR" -r "$REQS"
    rm -f "$REQS"
    log "$(ls "$WHL_DIR"/*.whl | wc -l) wheels in $WHL_DIR ($(du -sh "$WHL_DIR" | cut -f1))"
    exit 0
fi

# ----------------------------------------------------------------- run mode
OUT_DIR="${1:-$ROOT/work_dirs/gpu_check}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
cd "$ROOT"
START=$SECONDS
log "repo $ROOT, out $OUT_DIR, python $(command -v "$PYTHON") ($("$PYTHON" -V 2>&1))"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader | tee "$OUT_DIR/nvidia_smi.txt" || true

if compgen -G "$WHL_DIR/*.whl" > /dev/null; then
    log "installing the wheels this machine lacks from $WHL_DIR into $SITE_DIR"
    mkdir -p "$SITE_DIR"
    timeout "$INSTALL_TIMEOUT" "$PYTHON" - "$WHL_DIR" "$SITE_DIR" <<'PY'
import glob
import importlib.metadata as md
import os
import re
import subprocess
import sys

whl_dir, site = sys.argv[1], sys.argv[2]
present = {re.sub(r'[-_.]+', '-', (d.metadata['Name'] or '')).lower() for d in md.distributions()}
aliases = {'opencv-python-headless': 'opencv-python'}
todo, skipped = [], []
for wheel in sorted(glob.glob(os.path.join(whl_dir, '*.whl'))):
    name = re.sub(r'[-_.]+', '-', os.path.basename(wheel).split('-')[0]).lower()
    if name in present or aliases.get(name) in present:
        skipped.append(name)
    else:
        todo.append(wheel)
print(f'  already on this machine (skipped): {" ".join(skipped) or "-"}')
print(f'  installing {len(todo)} wheels')
if todo:
    subprocess.check_call(
        [sys.executable, '-m', 'pip', 'install', '-q', '--no-index', '--no-deps', '--target', site,
         *todo]
    )
PY
    export PYTHONPATH="$SITE_DIR:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
else
    log "no wheels in $WHL_DIR: using the packages already installed"
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi

log "checking the imports"
"$PYTHON" - "$DEVICE" <<'PY' | tee "$OUT_DIR/environment.txt"
import importlib
import sys

device = sys.argv[1]
missing = []
for name in ('torch', 'torchvision', 'numpy', 'cv2', 'mmengine', 'mmcv', 'mmpretrain',
             'open_clip', 'timm', 'mmdmpt'):
    try:
        module = importlib.import_module(name)
        print(f'{name} {getattr(module, "__version__", "?")}')
    except Exception as exc:  # report every problem at once
        missing.append(f'{name}: {type(exc).__name__}: {exc}')
import torch  # noqa: E402

if device.startswith('cuda'):
    if not torch.cuda.is_available():
        missing.append('torch.cuda.is_available() is False')
    else:
        print(f'GPU {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}, '
              f'bf16 {torch.cuda.is_bf16_supported()}')
if missing:
    print('cannot run the benchmarks:\n  ' + '\n  '.join(missing), file=sys.stderr)
    sys.exit(1)
PY

COMMON=(--device "$DEVICE" --amp "$AMP" --batch-size "$BATCH")
# shellcheck disable=SC2206
EXTRA=($EXTRA_ARGS)

log "train_cost.py (${TRAIN_TIMEOUT} s limit)"
timeout "$TRAIN_TIMEOUT" "$PYTHON" benchmarks/train_cost.py "${COMMON[@]}" \
    --steps "$TRAIN_STEPS" --warmup 3 "${EXTRA[@]}" --out "$OUT_DIR/train_cost.json" \
    | tee "$OUT_DIR/train_cost.txt"

log "infer_cost.py (${INFER_TIMEOUT} s limit)"
timeout "$INFER_TIMEOUT" "$PYTHON" benchmarks/infer_cost.py "${COMMON[@]}" \
    --steps "$INFER_STEPS" --warmup 5 "${EXTRA[@]}" --out "$OUT_DIR/infer_cost.json" \
    | tee "$OUT_DIR/infer_cost.txt"

log "done in $((SECONDS - START)) s: $OUT_DIR/{train_cost,infer_cost}.json"
