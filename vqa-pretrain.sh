#!/bin/sh
# 2.2 Pretrain visualbert-vqa-pre on VQA2 questions: masked LM over "question ? answer",
# over coco_detectron_fix_100 features. Extra flags are passed on to run_pretrain.py.
export DATA_DIR=${DATA_DIR:-./X_COCO/}
export LOG_DIR=${LOG_DIR:-./logs/vqa-pre}
. "$(dirname "$0")/tools/launch.sh"
# the original ran on GPU 3 with batch 16 x accumulation 1 per GPU; GPUS=... picks others (README)
plan_gpus "3" 16 1 "$@"

python -m paddle.distributed.launch $LAUNCH_GPUS --log_dir $LOG_DIR run_pretrain.py \
    --input_dir $DATA_DIR \
    --output_dir $LOG_DIR \
    --dataset vqa2 \
    --model_type visualbert \
    --model_name_or_path visualbert-vqa-pre \
    --image_feature_type coco_detectron_fix_100 \
    --train_batch_size $BATCH \
    --gradient_accumulation_steps $ACCUM \
    --learning_rate 1e-5 \
    --num_train_epochs 3 \
    "$@"
