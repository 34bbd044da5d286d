#!/usr/bin/env bash
# The GPU rows of benchmarks/RESULTS.md, in three parts that each fit a 10-minute slot.
#
#   benchmarks/gpu_suite.sh steps     LOG_DIR   # parity on the GPU, train-step throughput
#   benchmarks/gpu_suite.sh translate LOG_DIR   # translate throughput
#   benchmarks/gpu_suite.sh compare   LOG_DIR   # official vs ours, float32 and bfloat16
#   benchmarks/gpu_suite.sh input     LOG_DIR   # on-the-fly vs prepared input on this host's
#                                               # cores; a profiled paper-config run on prepared data
#   benchmarks/gpu_suite.sh translate_steady LOG_DIR  # generator only vs translate_dataset, 300
#                                               # toy_streets PNGs per size, device idle share
#   benchmarks/gpu_suite.sh train_e2e_b1  LOG_DIR  # the train CLI on 1914x1052 PNG folders and
#   benchmarks/gpu_suite.sh train_e2e_b32 LOG_DIR  # on prepared data vs the step alone
#   benchmarks/gpu_suite.sh issue15 LOG_DIR  # the three above, shortened to one ~10-minute slot
#   benchmarks/gpu_suite.sh profile LOG_DIR  # the paper step traced at batch 64 and 128 (bf16),
#                                            # batch-1 training end to end, and its CLI traced
#   benchmarks/gpu_suite.sh reflect_pad LOG_DIR  # reflection padding written three ways (~1 min)
#
# Run from the repository root with our stack importable (PYTHONPATH=.), a CUDA
# build of jax, the fixtures in $I2I_REFERENCE_DIR for `steps`, and for `compare`
# the official code in $OFFICIAL_DIR (torch, torchvision, pytorch-lightning 1.9,
# fvcore). Each benchmark runs under its own time limit
# and writes LOG_DIR/<name>.log; a failing one does not stop the others.
# PEAK_TFLOPS (default 989, the H100 SXM's dense bf16 figure) sets the MFU column.
set -u
part=${1:?steps, translate, compare, input, translate_steady, train_e2e_b1, train_e2e_b32, issue15, profile or reflect_pad}
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
  input)
    nproc
    run input_pipeline 240 python3 benchmarks/input_pipeline.py --tables=prepared,codecs \
      --files=48 --images=192 --batch_size=8 --pipelines=0x1,0x8,4x2,8x2,16x1
    # 1914x1052 toy scenes, prepared at the paper's resize, then 40 paper-config steps
    # (random VGG: no download) with steps 21-30 traced into profile_run/profile/.
    run toy_streets 150 python3 -m i2i_jax.data.toy_streets --out "$logs/toy" --n 32 \
      --height 1052 --width 1914
    pp="resize(256,512)|random_crop(256,256)|flip_lr|value_range(-1,1)"
    run prepare_sim 60 python3 -m i2i_jax.prepare --source="folder:$logs/toy/sim/images" \
      --labels="$logs/toy/sim/labels" --preprocess="$pp" --out="$logs/prepared_sim"
    run prepare_real 60 python3 -m i2i_jax.prepare --source="folder:$logs/toy/real/images" \
      --preprocess="$pp" --out="$logs/prepared_real"
    run profile 240 python3 -m i2i_jax.train --config=configs/vsait.py \
      --workdir="$logs/profile_run" --config.model.vgg_weights=random \
      --config.compute_dtype=bfloat16 --config.data.batch_size=8 \
      --config.data.source="prepared:$logs/prepared_sim" \
      --config.data.target="prepared:$logs/prepared_real" --config.data.preprocess="$pp" \
      --config.total_steps=40 --config.profile_start_step=21 --config.profile_steps=10 \
      --config.log_every_steps=10 --config.checkpoint.every_steps=1000
    find "$logs/profile_run/profile" -type f -exec ls -l {} +
    ;;
  issue15)
    # Issue 15's GPU acceptance rows in one ~10-minute slot, most wanted first (a part cut
    # by its limit keeps the rows it printed): translate at steady state, training end to end
    # at batch 32 (prepared, then on the fly) and at batch 1 (prepared). Frames, prepared data
    # and workdirs go to WORK_DIR (default /tmp/i2i_gpu), only the logs to LOG_DIR.
    work=${WORK_DIR:-/tmp/i2i_gpu}
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    run translate_steady 170 python3 benchmarks/translate.py --sizes=512x1024,1052x1914 \
      --dtypes=bfloat16 --batch_sizes=8 --calls=0 --frames=300 --frames_dir="$work/frames"
    run train_end_to_end_b32 250 python3 benchmarks/train_end_to_end.py --config=vsait \
      --batch_sizes=32 --steps=200 --warmup_steps=60 --log_every=20 --compute_dtype=bfloat16 \
      --inputs=prepared,folder --workers=0 --read_threads=16 --frames=64 --timeout=110 \
      --work_dir="$work/train_e2e"
    run train_end_to_end_b1 200 python3 benchmarks/train_end_to_end.py --config=vsait \
      --batch_sizes=1 --steps=600 --warmup_steps=200 --log_every=50 --compute_dtype=bfloat16 \
      --inputs=prepared --workers=4 --device_prefetch=0,2 --read_threads=4 --frames=64 \
      --timeout=110 --work_dir="$work/train_e2e"
    ;;
  profile)
    # Issue 15, item 5, in one ~8-minute slot: where the paper step's device time goes in
    # bfloat16 (step_profile.py: steps/s, MFU at 1167 GFLOPs per image, kernel time by kind)
    # at batch 64 and 128; batch-1 training end to end on prepared data (4 grain workers,
    # device prefetch 2) against the step alone; and the same CLI run with steps 301-310
    # traced (device busy share). Traces stay in LOG_DIR/trace_*; frames, prepared data and
    # workdirs in WORK_DIR.
    work=${WORK_DIR:-/tmp/i2i_gpu}
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    run step_profile_b64 150 python3 benchmarks/step_profile.py --config=vsait --batch_size=64 \
      --compute_dtype=bfloat16 --gflops=$((64 * 1167)) --peak_tflops="$peak" \
      --out="$logs/trace_b64"
    run train_end_to_end_b1 240 python3 benchmarks/train_end_to_end.py --config=vsait \
      --batch_sizes=1 --steps=600 --warmup_steps=200 --log_every=50 --compute_dtype=bfloat16 \
      --inputs=prepared --workers=4 --device_prefetch=2 --read_threads=4 --frames=32 \
      --step_only_steps=300 --step_only_warmup=50 --timeout=150 --work_dir="$work/train_e2e"
    prepared="$work/train_e2e/%s_1052x1914_prepared_vsait"
    run train_b1_traced 100 python3 -m i2i_jax.train --config=configs/vsait.py \
      --workdir="$work/traced_b1" --config.model.vgg_weights=random \
      --config.compute_dtype=bfloat16 --config.data.source="prepared:$(printf "$prepared" sim)" \
      --config.data.target="prepared:$(printf "$prepared" real)" --config.data.worker_count=4 \
      --config.data.read_threads=4 --config.total_steps=330 --config.profile_start_step=301 \
      --config.profile_steps=10 --config.log_every_steps=50 --config.log_images_every=1000 \
      --config.checkpoint.every_steps=1000
    cp -r "$work/traced_b1/profile" "$logs/trace_b1_cli"
    run trace_b1_cli 60 python3 benchmarks/step_profile.py --summarise="$logs/trace_b1_cli" \
      --steps=10 --device_pattern=/device:GPU
    run step_profile_b128 150 python3 benchmarks/step_profile.py --config=vsait \
      --batch_size=128 --compute_dtype=bfloat16 --gflops=$((128 * 1167)) \
      --peak_tflops="$peak" --out="$logs/trace_b128"
    ;;
  reflect_pad)
    # The paper step's largest cost after the convolutions (RESULTS.md, "Third round"): the
    # reflection pads' concatenate fusions, against two other ways of writing the same pad.
    run reflect_pad 120 python3 benchmarks/reflect_pad.py --dtype=bfloat16 --calls=50
    ;;
  translate_steady)
    # Paper generator, bfloat16, 300 toy_streets "real" frames per size rendered once into
    # LOG_DIR/frames (16 processes, ~15 s); 4 batches of fill and of drain left out.
    run translate_steady 540 python3 benchmarks/translate.py --sizes=512x1024,1052x1914 \
      --dtypes=bfloat16 --batch_sizes=1,8 --calls=0 --frames=300 --frames_dir="$logs/frames"
    ;;
  train_e2e_b1|train_e2e_b32)
    # Paper config, bfloat16, random VGG; 64 sim + 64 real frames at 1914x1052 and their
    # prepared copies in LOG_DIR/train_e2e (rendered and prepared by the first of the two parts).
    batch=${part#train_e2e_b}
    if [ "$batch" = 1 ]; then steps=1000 warmup=300; else steps=200 warmup=60; fi
    run "train_end_to_end_b$batch" 560 python3 benchmarks/train_end_to_end.py --config=vsait \
      --batch_sizes="$batch" --steps="$steps" --warmup_steps="$warmup" --log_every=20 \
      --compute_dtype=bfloat16 --inputs=folder,prepared --workers=0 --read_threads=16 \
      --frames=64 --timeout=240 --work_dir="$logs/train_e2e"
    ;;
  *) echo "unknown part $part (steps, translate, compare, input, translate_steady, train_e2e_b1," \
       "train_e2e_b32, issue15, profile or reflect_pad)" >&2; exit 2 ;;
esac
