#!/bin/sh
# 2.4 Pretrain visualbert-nlvr2-pre on NLVR2: masked LM + the NLVR2 label on the matching head,
# over nlvr2_detectron_fix_144 features. Extra flags are passed on to run_pretrain.py.
export DATA_DIR=${DATA_DIR:-./X_NLVR/}
export LOG_DIR=${LOG_DIR:-./logs/nlvr2-pre}
unset CUDA_VISIBLE_DEVICES
. "$(dirname "$0")/tools/launch.sh"

python -m paddle.distributed.launch $(gpus_flag "4") --log_dir $LOG_DIR run_pretrain.py \
    --input_dir $DATA_DIR \
    --output_dir $LOG_DIR \
    --dataset nlvr2 \
    --model_type visualbert \
    --model_name_or_path visualbert-nlvr2-pre \
    --image_feature_type nlvr2_detectron_fix_144 \
    --train_batch_size 8 \
    --learning_rate 1e-5 \
    --num_train_epochs 3 \
    "$@"
