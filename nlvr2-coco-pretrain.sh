#!/bin/sh
# 2.3 Pretrain visualbert-nlvr2-coco-pre on COCO captions: masked LM + image-caption matching,
# over coco_detectron_fix_144 features. Extra flags are passed on to run_pretrain.py.
export DATA_DIR=${DATA_DIR:-./X_COCO/}
export LOG_DIR=${LOG_DIR:-./logs/nlvr2-coco-pre}
. "$(dirname "$0")/tools/launch.sh"
# the original ran on GPU 2 with batch 16 x accumulation 1 per GPU; GPUS=... picks others (README)
plan_gpus "2" 16 1 "$@"

python -m paddle.distributed.launch $LAUNCH_GPUS --log_dir $LOG_DIR run_pretrain.py \
    --input_dir $DATA_DIR \
    --output_dir $LOG_DIR \
    --dataset coco_captions \
    --model_type visualbert \
    --model_name_or_path visualbert-nlvr2-coco-pre \
    --image_feature_type coco_detectron_fix_144 \
    --train_batch_size $BATCH \
    --gradient_accumulation_steps $ACCUM \
    --learning_rate 1e-5 \
    --num_train_epochs 3 \
    "$@"
