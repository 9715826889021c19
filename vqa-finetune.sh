#!/bin/sh
# 3.1 Fine-tune on VQA2 (3,129-answer classification) over coco_detectron_fix_100 features.
# Extra flags are passed on to VQA2/run_vqa2.py.
export DATA_DIR=${DATA_DIR:-./X_COCO/}
export LOG_DIR=${LOG_DIR:-./logs/vqa}
. "$(dirname "$0")/tools/launch.sh"
# the original ran on GPU 0 with batch 64 x accumulation 1 per GPU; GPUS=... picks others (README)
plan_gpus "0" 64 1 "$@"

python -m paddle.distributed.launch $LAUNCH_GPUS --log_dir $LOG_DIR VQA2/run_vqa2.py \
    --input_dir $DATA_DIR \
    --output_dir $LOG_DIR \
    --task_name vqa2 \
    --model_type visualbert \
    --model_name_or_path visualbert-vqa-pre \
    --batch_size $BATCH \
    --gradient_accumulation_steps $ACCUM \
    --learning_rate 2e-5 \
    --save_steps 10000 \
    --num_train_epochs 10 \
    "$@"
