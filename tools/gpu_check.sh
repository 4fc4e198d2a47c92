#!/usr/bin/env bash
# The CUDA checks and the GPU benchmarks in one run on a GPU machine (docs/benchmarks.md says what
# each figure means). For the project's lent GPU machines, whose image has torch but not rasterio
# or segmentation-models-pytorch and reaches no package index:
#   1. here: ../shared/tools/device-wheels.sh pytest iniconfig pluggy packaging
#      (wheels into .whl/, which git ignores; geopandas does not fit, so the CUDA training test,
#      which exports chips, skips there and bench_train times the CUDA training step instead)
#   2. the device tool: run(command="bash tools/gpu_check.sh", carry=[".whl"])
# Anywhere else with a GPU and the project installed, .whl/ may be absent: nothing is installed.
# Logs go to $OUT (the device tool brings them back) or /tmp/gpu_check; summary.log has the tails.
# The steps' time limits add up to 580 s, within the device tool's 10 minutes a command.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi

step() {  # step NAME SECONDS COMMAND...: run it into NAME.log, its status and tail into summary
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*" >> "$out/summary.log"
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    echo "exit status $?" >> "$out/summary.log"
    tail -n 8 "$out/$name.log" >> "$out/summary.log"
}

nvidia-smi > "$out/nvidia-smi.log" 2>&1
step test_cuda 100 python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py
step bench_predict 170 python3 tools/bench_predict.py --device cuda --batch-size 32 \
    --scenes 2000,8000 --repeats 3
step bench_predict_host_blend 90 python3 tools/bench_predict.py --device cuda --batch-size 32 \
    --scenes 8000 --repeats 3 --host-blend
step bench_pipeline 100 python3 tools/bench_pipeline.py --scene 8000 --device cuda \
    --batch-size 32 --workers 1,2,4
step bench_tiles 60 python3 tools/bench_tiles.py --tiles 60 --size 512 --chip-size 256 --ngf 64 \
    --device cuda --batch-size 32 --repeats 2 --workers 1,4
step bench_train 60 python3 tools/bench_train.py --device cuda --batch-sizes 8,32 --steps 30
cat "$out/summary.log"
