#!/bin/sh
# 3.2 Fine-tune on NLVR2 (true/false over an image pair) over nlvr2_detectron_fix_144 features.
# Extra flags are passed on to NLVR2/run_nlvr2.py.
export DATA_DIR=${DATA_DIR:-./X_NLVR/}
export LOG_DIR=${LOG_DIR:-./logs/nlvr2}
. "$(dirname "$0")/tools/launch.sh"
# the original ran on GPU 1,2 with batch 16 x accumulation 4 per GPU; GPUS=... picks others (README)
plan_gpus "1,2" 16 4 "$@"

python -m paddle.distributed.launch $LAUNCH_GPUS --log_dir $LOG_DIR NLVR2/run_nlvr2.py \
    --input_dir $DATA_DIR \
    --output_dir $LOG_DIR \
    --task_name nlvr2 \
    --model_type visualbert \
    --model_name_or_path visualbert-nlvr2-pre \
    --batch_size $BATCH \
    --gradient_accumulation_steps $ACCUM \
    --learning_rate 2e-5 \
    --save_steps 5000 \
    --num_train_epochs 10 \
    "$@"
