#!/usr/bin/env bash
# Training samples/s and model FLOP utilisation of OUR VisualBERT on one GPU, bf16 AMP, BERT-base:
# the pretraining step (MLM + matching, 16+ captions x 100 regions of 2048), the VQA fine-tuning
# step and VQA inference, at batch 128 (then 64 if 128 does not fit). Needs paddlepaddle-gpu;
# torch/transformers are not used.
#
#   bash benchmarks/gpu.sh [OUT.json] [extra flags for `bench_model.py mfu`]
#   bash benchmarks/gpu.sh gpu.json --peak_tflops 989 --amp_level O2
#
# MFU is achieved matmul FLOP/s over --peak_tflops (dense bf16; looked up from the device name for
# H100/H200/A100/L40S/... when not given). What is counted: see model_flops in bench_model.py,
# also copied into the JSON ("flops_counted"). For a CPU dry run of the same code:
#   bash benchmarks/gpu.sh /tmp/cpu.json --device cpu --amp none --tiny --batch 2 --steps 2 --warmup 1
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_bench.json}"
shift || true
python=${PYTHON:-python}

if [[ " $* " != *" --device cpu "* ]]; then
    "$python" -c "import paddle, sys; sys.exit(0 if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() else 1)" \
        || { echo "gpu.sh: this paddle has no usable GPU (install paddlepaddle-gpu, or pass --device cpu for a dry run)" >&2; exit 1; }
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
fi

# The last --batch given wins, so a user's --batch replaces the 128/64 ladder below. Only a run that
# ran out of GPU memory is retried smaller: any other failure is reported as it is (a retry would
# hide a real error behind a second attempt).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for batch in 128 64; do
    if "$python" benchmarks/bench_model.py mfu --batch "$batch" --out "$out" "$@" 2>&1 | tee "$log"; then
        echo "gpu.sh: wrote $out"
        exit 0
    fi
    if ! grep -q -i -E "out of memory|ResourceExhausted" "$log"; then
        echo "gpu.sh: batch $batch failed (not out of memory; see the error above)" >&2
        exit 1
    fi
    echo "gpu.sh: batch $batch ran out of GPU memory; trying a smaller one" >&2
done
exit 1
