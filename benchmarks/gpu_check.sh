#!/usr/bin/env bash
# GPU check of the training and inference cost (issue 16's GPU targets), one
# CUDA device, bf16 autocast, batch 64, JSON written to OUT_DIR:
#   1. train_cost.py, eager: dmpt, full_ft, dmpt_lowmem (step time, images/s,
#      max allocated memory, ratios to full_ft);
#   2. profile_step.py: device kernels per step of dmpt and full_ft;
#   3. train_cost.py, compiled: dmpt_compiled, full_ft_compiled, for each mode
#      of COMPILE_MODES (default: reduce-overhead = CUDA graphs, then torch's
#      default mode);
#   4. infer_cost.py: dmpt vs the bare frozen tower;
#   5. summary.txt / summary.json: the targets next to the measured values.
# Every stage has its own time limit and the whole run stops starting stages
# once TOTAL_LIMIT is near (a stage that fails or times out is reported and
# the next one runs), so that the script fits a 10-minute command.
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
# smoke run), COMPILE_MODES ("reduce-overhead default"; "none" skips stage 3),
# STAGES ("train profile compiled infer"), TOTAL_LIMIT (570 s for the whole
# run), INSTALL_TIMEOUT (120 s), TRAIN_TIMEOUT (200 s), PROFILE_TIMEOUT
# (120 s), COMPILE_TIMEOUT (240 s per mode), INFER_TIMEOUT (90 s).
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
COMPILE_MODES="${COMPILE_MODES:-reduce-overhead default}"
STAGES="${STAGES:-train profile compiled infer}"
TOTAL_LIMIT="${TOTAL_LIMIT:-570}"
INSTALL_TIMEOUT="${INSTALL_TIMEOUT:-120}"
TRAIN_TIMEOUT="${TRAIN_TIMEOUT:-200}"
PROFILE_TIMEOUT="${PROFILE_TIMEOUT:-120}"
COMPILE_TIMEOUT="${COMPILE_TIMEOUT:-240}"
INFER_TIMEOUT="${INFER_TIMEOUT:-90}"

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

# run_stage NAME LIMIT CMD...: run CMD under min(LIMIT, time left), tee its output
# to OUT_DIR/NAME.txt; a failure or timeout is logged and the script goes on.
run_stage() {
    local name="$1" limit="$2"
    shift 2
    local left=$((TOTAL_LIMIT - (SECONDS - START) - 15))
    if ((left < 30)); then
        log "$name: skipped (${left} s left of TOTAL_LIMIT=${TOTAL_LIMIT})"
        echo "skipped: time" > "$OUT_DIR/$name.txt"
        return 0
    fi
    ((limit > left)) && limit=$left
    log "$name (${limit} s limit)"
    set +e
    timeout "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.txt"
    local rc=${PIPESTATUS[0]}
    set -e
    ((rc == 0)) || log "$name: exit code $rc (124 = time limit); going on"
    return 0
}

wants() { [[ " $STAGES " == *" $1 "* ]]; }

if wants train; then
    run_stage train_cost "$TRAIN_TIMEOUT" "$PYTHON" benchmarks/train_cost.py "${COMMON[@]}" \
        --variants dmpt full_ft dmpt_lowmem --steps "$TRAIN_STEPS" --warmup 3 "${EXTRA[@]}" \
        --out "$OUT_DIR/train_cost.json"
fi
if wants profile; then
    run_stage profile_step "$PROFILE_TIMEOUT" "$PYTHON" benchmarks/profile_step.py \
        "${COMMON[@]}" --variants dmpt full_ft --steps 3 --warmup 3 --top 20 "${EXTRA[@]}" \
        --out "$OUT_DIR/profile_step.json"
fi
if wants compiled && [[ "$COMPILE_MODES" != "none" ]]; then
    for mode in $COMPILE_MODES; do
        MODE_ARGS=()
        [[ "$mode" != "default" ]] && MODE_ARGS=(--compile-mode "$mode")
        run_stage "train_cost_compiled_$mode" "$COMPILE_TIMEOUT" "$PYTHON" \
            benchmarks/train_cost.py "${COMMON[@]}" --variants dmpt_compiled full_ft_compiled \
            "${MODE_ARGS[@]}" --steps "$TRAIN_STEPS" --warmup 4 "${EXTRA[@]}" \
            --out "$OUT_DIR/train_cost_compiled_$mode.json"
    done
fi
if wants infer; then
    run_stage infer_cost "$INFER_TIMEOUT" "$PYTHON" benchmarks/infer_cost.py "${COMMON[@]}" \
        --steps "$INFER_STEPS" --warmup 5 "${EXTRA[@]}" --out "$OUT_DIR/infer_cost.json"
fi

log "summary"
"$PYTHON" - "$OUT_DIR" <<'PY' | tee "$OUT_DIR/summary.txt"
import glob
import json
import os
import sys

out = sys.argv[1]


def load(name):
    path = os.path.join(out, name)
    return json.load(open(path)) if os.path.isfile(path) else {}


train, prof, infer = load('train_cost.json'), load('profile_step.json'), load('infer_cost.json')
compiled = {os.path.basename(p)[len('train_cost_compiled_'):-5]: json.load(open(p))
            for p in sorted(glob.glob(os.path.join(out, 'train_cost_compiled_*.json')))}
rows, summary = [], {}


def row(target, value, ok):
    rows.append((target, value, '-' if ok is None else ('yes' if ok else 'NO')))
    summary[target] = dict(value=value, met=ok)


d, f, low = train.get('dmpt'), train.get('full_ft'), train.get('dmpt_lowmem')
if d and f:
    ratio = d['step_s'] / f['step_s']
    row('DMPT step <= 0.80 x full FT (eager)', f'{ratio:.2f} x ({d["step_s"] * 1e3:.1f} vs '
        f'{f["step_s"] * 1e3:.1f} ms)', ratio <= 0.80)
    row('DMPT eager step <= 40 ms', f'{d["step_s"] * 1e3:.1f} ms, '
        f'{d["images_per_s"]:,.0f} images/s', d['step_s'] <= 0.040)
    row('DMPT eager peak <= 4,900 MiB', f'{d["peak_mb"]:,.0f} MiB ({d["peak_mb"] / f["peak_mb"]:.2f} '
        'x full FT)', d['peak_mb'] <= 4900)
if low and f:
    ratio = low['peak_mb'] / f['peak_mb']
    row('low-memory peak <= 0.15 x full FT', f'{ratio:.3f} x ({low["peak_mb"]:,.0f} MiB)',
        ratio <= 0.15)
if low and d:
    ratio = low['step_s'] / d['step_s']
    row('low-memory step <= 1.35 x DMPT', f'{ratio:.2f} x ({low["step_s"] * 1e3:.1f} ms)',
        ratio <= 1.35)
for mode, res in compiled.items():
    dc, fc = res.get('dmpt_compiled'), res.get('full_ft_compiled')
    if dc:
        row(f'DMPT compiled ({mode}) <= 28 ms', f'{dc["step_s"] * 1e3:.1f} ms, '
            f'{dc["images_per_s"]:,.0f} images/s', dc['step_s'] <= 0.028)
    if dc and fc:
        ratio = dc['step_s'] / fc['step_s']
        row(f'DMPT compiled ({mode}) <= 0.80 x full FT compiled', f'{ratio:.2f} x', ratio <= 0.80)
if 'dmpt' in prof:
    kernels = prof['dmpt'].get('kernels', 0)
    other = prof.get('full_ft', {}).get('kernels', 0)
    row('DMPT kernels per step <= 1,000', f'{kernels:,.0f} (full FT {other:,.0f})',
        kernels <= 1000 if kernels else None)
if infer.get('dmpt') and infer.get('frozen_backbone'):
    ratio = infer['dmpt']['step_s'] / infer['frozen_backbone']['step_s']
    row('inference vs bare tower', f'{ratio:.2f} x', None)
width = max([len(r[0]) for r in rows] + [6])
print(f'{"target".ljust(width)} | measured | met')
for target, value, met in rows:
    print(f'{target.ljust(width)} | {value} | {met}')
json.dump(summary, open(os.path.join(out, 'summary.json'), 'w'), indent=2)
PY

log "done in $((SECONDS - START)) s: $OUT_DIR"
