#!/bin/sh
# 2.4 Pretrain visualbert-nlvr2-pre on NLVR2: masked LM + the NLVR2 label on the matching head,
# over nlvr2_detectron_fix_144 features. Extra flags are passed on to run_pretrain.py.
export DATA_DIR=${DATA_DIR:-./X_NLVR/}
export LOG_DIR=${LOG_DIR:-./logs/nlvr2-pre}
. "$(dirname "$0")/tools/launch.sh"
# the original ran on GPU 4 with batch 8 x accumulation 1 per GPU; GPUS=... picks others (README)
plan_gpus "4" 8 1 "$@"

python -m paddle.distributed.launch $LAUNCH_GPUS --log_dir $LOG_DIR run_pretrain.py \
    --input_dir $DATA_DIR \
    --output_dir $LOG_DIR \
    --dataset nlvr2 \
    --model_type visualbert \
    --model_name_or_path visualbert-nlvr2-pre \
    --image_feature_type nlvr2_detectron_fix_144 \
    --train_batch_size $BATCH \
    --gradient_accumulation_steps $ACCUM \
    --learning_rate 1e-5 \
    --num_train_epochs 3 \
    "$@"
