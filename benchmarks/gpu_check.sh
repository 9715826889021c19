#!/usr/bin/env bash
# Run every GPU-only path once on this machine, one PASS/FAIL line per check (under 10 minutes on one
# GPU; tiny models on the built-in demo data, except the throughput benchmark). Run it first on a
# new GPU machine, before a long training run:
#
#   bash benchmarks/gpu_check.sh            # logs and outputs under logs/gpu_check/
#   DEVICE=cpu bash benchmarks/gpu_check.sh # a dry run of the same steps on the CPU (AMP is ignored there)
#
# Checks: Paddle's run_check; fused vs matmul attention in fp32/fp16/bf16 at an odd and an even
# length; 20 AMP fp16 pretraining steps resumed to 30 equal a straight 30; bf16 fine-tuning with
# evaluation under AMP; fp32 fine-tuning with evaluation; prediction with and without AMP; feature
# extraction with and without AMP (ResNet-50, EXTRACT_WEIGHTS=imagenet by default: downloaded once;
# `none` for random weights); the throughput benchmark (benchmarks/gpu.sh). A failing check is
# reported as failed, never retried: the exit status is the number of failed checks (0: all passed).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-logs/gpu_check}
DEVICE=${DEVICE:-gpu}
EXTRACT_WEIGHTS=${EXTRACT_WEIGHTS:-imagenet}
python=${PYTHON:-python}
# the resume check compares parameters to 1e-5: deterministic kernels make the two runs comparable
export FLAGS_cudnn_deterministic=1 FLAGS_embedding_deterministic=1
export PYTHONWARNINGS="${PYTHONWARNINGS:+$PYTHONWARNINGS,}ignore:No ccache found:UserWarning"
rm -rf "$OUT"
mkdir -p "$OUT"
failed=0

check() {  # check NAME command...: its output goes to $OUT/NAME.log; prints one PASS/FAIL line
    local name=$1 t0=$SECONDS status=PASS
    shift
    "$@" > "$OUT/$name.log" 2>&1 || { status=FAIL; failed=$((failed + 1)); }
    printf '%-26s %s  (%3ds)  %s\n' "$name" "$status" $((SECONDS - t0)) "$(tail -n 1 "$OUT/$name.log" | cut -c1-110)"
}

data=$OUT/data
tiny=configs/visualbert-tiny.json
pretrain=("$python" run_pretrain.py --input_dir "$data/X_COCO" --dataset coco_captions --model_name_or_path "$tiny"
          --eval_split none --max_regions 4 --train_batch_size 8 --learning_rate 1e-3 --logging_steps 5
          --num_workers 0 --device "$DEVICE")
finetune=("$python" VQA2/run_vqa2.py --input_dir "$data/X_COCO" --model_name_or_path "$tiny" --train_split trainval
          --eval_split minival --batch_size 32 --learning_rate 1e-3 --max_steps 20 --eval_steps 10 --save_steps 10
          --logging_steps 5 --num_workers 0 --device "$DEVICE")
predict=("$python" VQA2/run_predict.py --input_dir "$data/X_COCO" --model_name_or_path "$OUT/vqa-fp32/best"
         --split minival --num_workers 0 --device "$DEVICE")

resume_equals_straight() {  # 30 steps straight; a copy cut back to checkpoint-20 resumed to 30; same parameters
    "${pretrain[@]}" --use_amp --amp_dtype float16 --max_steps 30 --save_steps 10 --save_total_limit 0 \
        --output_dir "$OUT/fp16-straight" || return 1
    mkdir -p "$OUT/fp16-resumed"
    cp -r "$OUT/fp16-straight/checkpoint-20" "$OUT/fp16-straight/metrics.jsonl" "$OUT/fp16-resumed/"
    cp "$OUT/fp16-straight"/*.json "$OUT/fp16-resumed/" 2>/dev/null
    "${pretrain[@]}" --use_amp --amp_dtype float16 --max_steps 30 --save_steps 10 --save_total_limit 0 \
        --output_dir "$OUT/fp16-resumed" --resume latest || return 1
    "$python" benchmarks/gpu_check.py same_params "$OUT/fp16-straight" "$OUT/fp16-resumed" --atol 1e-5
}

extract_with_and_without_amp() {
    "$python" -c "from visualbert.own_demo import write_shapes; write_shapes('$OUT/shapes')" || return 1
    local common=(-m visualbert.extract --image_dir "$OUT/shapes/images" --backbone resnet50
                  --weights "$EXTRACT_WEIGHTS" --grid 2 --image_size 224 --num_workers 0 --device "$DEVICE")
    "$python" "${common[@]}" --output_dir "$OUT/features-fp32" --dtype float32 || return 1
    "$python" "${common[@]}" --output_dir "$OUT/features-amp" --dtype float32 --use_amp || return 1
    "$python" benchmarks/gpu_check.py same_features "$OUT/features-fp32" "$OUT/features-amp" --min_cosine 0.99
}

if [ "$DEVICE" = gpu ]; then
    check run_check "$python" -c "import paddle; assert paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count(), \
'this paddle has no usable GPU (install paddlepaddle-gpu)'; paddle.utils.run_check()"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/GPU: /'
else
    check run_check "$python" -c "import paddle; paddle.utils.run_check()"
fi
check attention "$python" benchmarks/gpu_check.py attention --device "$DEVICE"
check demo_data "$python" -m visualbert.demo --out_dir "$data"
check amp_fp16_resume resume_equals_straight
check amp_bf16_with_eval "${finetune[@]}" --use_amp --amp_dtype bfloat16 --output_dir "$OUT/vqa-bf16"
check fp32_with_eval "${finetune[@]}" --output_dir "$OUT/vqa-fp32"
check predict_fp32 "${predict[@]}" --output "$OUT/answers-fp32.json"
check predict_amp "${predict[@]}" --use_amp --output "$OUT/answers-amp.json"
check predict_agree "$python" benchmarks/gpu_check.py same_answers "$OUT/answers-fp32.json" "$OUT/answers-amp.json"
check extract_amp extract_with_and_without_amp
if [ "$DEVICE" = gpu ]; then
    check throughput bash benchmarks/gpu.sh "$OUT/throughput.json"
else
    check throughput bash benchmarks/gpu.sh "$OUT/throughput.json" --device cpu --amp none --tiny --batch 2 --steps 2 --warmup 1
fi

if [ "$failed" -eq 0 ]; then
    echo "gpu_check: all checks passed (logs in $OUT/)"
else
    echo "gpu_check: $failed check(s) FAILED; each one's output is in $OUT/<check>.log"
fi
exit "$failed"
