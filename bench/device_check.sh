#!/usr/bin/env bash
# The GPU check, ready for the day a machine with an NVIDIA GPU is lent (an H200: ~15 minutes of
# device time in all, ~1-2 of them to start it). Runs, in under 8 minutes on a healthy H200:
# pytest -m gpu, the scan and burn benchmarks against their goals, the NVML recorder, and burnin
# run with quick on the card -- all through `python -m bench.first_contact`, which prints
# ALL MET or NOT ALL MET -- and leaves at most 8 files in the output folder.
#
#   bash bench/device_check.sh [OUT]          # OUT: where the results go (default $OUT, else /tmp/device-check)
#
# The lent machine has CuPy 14 for CUDA 13, nvidia-ml-py, numpy, psutil, pytest, click and rich,
# but not burnin's other needs: carry them as wheels for its Python 3.12 in .whl/ (git-ignored),
# made here once with
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl pydantic pydantic-core annotated-types typing-inspection pyserial textual mdit-py-plugins \
#     platformdirs linkify-it-py uc-micro-py typing-extensions
# (one version of each). Do not install the [cuda] extra there: it is CuPy for CUDA 12.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/device-check}}
work=/tmp/device-check-work
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "device_check: the carried wheels do not install" >&2; exit 3; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import pydantic, serial, textual" 2>/dev/null \
    || { echo "device_check: burnin's dependencies are missing here: carry them as wheels in .whl/ (see this script)" >&2; exit 3; }
{
    nvidia-smi -L
    nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv
    python3 -c "import cupy as cp; print('CuPy', cp.__version__, 'runtime', cp.cuda.runtime.runtimeGetVersion(), 'driver', cp.cuda.runtime.driverGetVersion(), 'NVRTC', cp.cuda.nvrtc.getVersion())"
} >"$out/gpus.txt" 2>&1
cat "$out/gpus.txt"
timeout 500 python3 -m bench.first_contact --out "$work" --budget 480 2>&1 | tee "$out/first-contact.log"
rc=${PIPESTATUS[0]}
cp "$work/first-contact.json" "$work/quick.json" "$out/" 2>/dev/null
cp "$work"/nvml/*-real.json "$out/" 2>/dev/null
exit "$rc"
