#!/usr/bin/env bash
# The GPU check: one prepared script, at most 5 minutes, for a bare GPU machine whose python3 already
# has torch, transformers, timm and accelerate (and nothing can be downloaded there).
#
#   bash benchmarks/checks/gpu_check.sh --wheels   # here, with the package registry: the pure-Python packages the check
#                                           # needs that such a machine lacks, as wheels in .whl/ (git-ignored)
#   bash benchmarks/checks/gpu_check.sh            # there: installs .whl/ into /tmp/site, then runs
#                                           # benchmarks/checks/gpu_check.py (model and CRF on CUDA vs CPU, syncs per
#                                           # step, bf16/fp16 training steps, the pipeline, the inference precision
#                                           # switch, the speed table)
#
# The report goes to $OUT/gpu_check.json when $OUT is set (the device tool's output folder), else to
# benchmarks/results/gpu_check.json. Record figures in BENCHMARKS.md only when measured on a GPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Not on the GPU image (checked against its package list in the device tool's KINDS.md): datasets and what it
# needs beyond that image, seqeval. Versions as installed here.
WHEELS=(datasets dill multiprocess seqeval)

if [ "${1:-}" = "--wheels" ]; then
    rm -rf .whl && mkdir -p .whl
    for name in "${WHEELS[@]}"; do
        python=python3
        [ -x .venv/bin/python ] && python=.venv/bin/python  # the versions the project was tested with
        version=$("$python" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
        [ -n "$version" ] || { echo "pip show $name: not installed here"; exit 1; }
        python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
            --platform any -d .whl "$name==$version" 2>/dev/null \
        || "$python" -m pip wheel --quiet --no-deps -w .whl "$name==$version"  # a pure-Python sdist (seqeval)
    done
    ls .whl
    exit 0
fi

if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
report="${OUT:-benchmarks/results}/gpu_check.json"
mkdir -p "$(dirname "$report")"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 290 python3 benchmarks/checks/gpu_check.py --device cuda --output "$report"
