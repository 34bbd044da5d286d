#!/usr/bin/env bash
# The GPU rows of benchmarks/RESULTS.md, in three parts that each fit a 10-minute slot.
#
#   benchmarks/gpu_suite.sh steps     LOG_DIR   # parity on the GPU, train-step throughput
#   benchmarks/gpu_suite.sh translate LOG_DIR   # translate throughput
#   benchmarks/gpu_suite.sh compare   LOG_DIR   # official vs ours, float32 and bfloat16
#
# Run from the repository root with our stack importable (PYTHONPATH=.), a CUDA
# build of jax, the fixtures in $I2I_REFERENCE_DIR for `steps`, and for `compare`
# the official code in $OFFICIAL_DIR (torch, torchvision, pytorch-lightning 1.9,
# fvcore). Each benchmark runs under its own time limit
# and writes LOG_DIR/<name>.log; a failing one does not stop the others.
# PEAK_TFLOPS (default 989, the H100 SXM's dense bf16 figure) sets the MFU column.
set -u
part=${1:?steps, translate or compare}
logs=${2:?log directory}
mkdir -p "$logs"
peak=${PEAK_TFLOPS:-989}
export PYTHONUNBUFFERED=1

run() {  # run NAME SECONDS COMMAND...: tee the output to LOG_DIR/NAME.log
  local name=$1 limit=$2
  shift 2
  echo "=== $name: $*"
  timeout "$limit" "$@" 2>&1 | tee "$logs/$name.log" | grep -v -E "^(W|I)[0-9]{4} "
  echo "=== $name: exit ${PIPESTATUS[0]}"
}

case $part in
  steps)
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    python3 -c "import jax, flax, optax, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__)"
    run parity 150 python3 -m pytest -q -p no:cacheprovider tests/test_reference_parity.py
    run train_step_float32 200 python3 benchmarks/train_step.py --configs=vsait \
      --batch_sizes=1,8,32 --steps=20 --warmup=3 --compute_dtype=float32 \
      --peak_tflops="$peak" --split_config=
    run train_step_bfloat16 300 python3 benchmarks/train_step.py --configs=vsait \
      --batch_sizes=1,8,32,64 --steps=20 --warmup=3 --compute_dtype=bfloat16 \
      --peak_tflops="$peak" --split_config=
    ;;
  translate)
    run translate 280 python3 benchmarks/translate.py --sizes=512x1024,1052x1914 \
      --dtypes=float32,bfloat16 --batch_sizes=1,8 --warmup=2 --calls=10 --folder_images=32
    ;;
  compare)
    for dtype in float32 bfloat16; do
      XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 run "compare_official_$dtype" 170 \
        python3 benchmarks/compare_official.py --official-dir="$OFFICIAL_DIR" --device=gpu \
        --dtype="$dtype" --cases=paper,paper_b8,forward,tiny --steps=10 --warmup=3
    done
    ;;
  *) echo "unknown part $part (steps, translate or compare)" >&2; exit 2 ;;
esac
