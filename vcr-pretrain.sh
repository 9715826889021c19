#!/bin/sh
# 2.5 Task-specific pretraining of visualbert-vcr-pre on VCR: masked LM on the question with each
# answer and the question plus the right answer with each rationale, over the images through the
# VCR image encoder, from visualbert-vcr-coco-pre. The paper's settings: 4 GPUs x 8 (32), learning
# rate 5e-5, one epoch, warmup 18.79% (R2C's). Extra flags are passed on to run_pretrain.py.
export DATA_DIR=${DATA_DIR:-./X_VCR/}
export LOG_DIR=${LOG_DIR:-./logs/vcr-pre}
unset CUDA_VISIBLE_DEVICES
. "$(dirname "$0")/tools/launch.sh"

python -m paddle.distributed.launch $(gpus_flag "0,1,2,3") --log_dir $LOG_DIR run_pretrain.py \
    --input_dir $DATA_DIR \
    --output_dir $LOG_DIR \
    --dataset vcr \
    --model_type visualbert \
    --model_name_or_path visualbert-vcr-coco-pre \
    --train_batch_size 8 \
    --learning_rate 5e-5 \
    --warmup_proportion 0.1879 \
    --max_seq_length 128 \
    --num_train_epochs 1 \
    "$@"
