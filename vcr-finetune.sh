#!/bin/sh
# 3.3 Fine-tune on VCR, Q->A (MODE=answer, the default) or QA->R (MODE=rationale), from the task-
# pretrained visualbert-vcr-pre, the image encoder training with the model. The paper's settings:
# 4 GPUs x 8 questions (32), learning rate 2e-5, warmup 10%, 8 epochs for Q->A and 12 for QA->R.
# Then VCR/run_predict.py --answer_model logs/vcr-answer/best --rationale_model logs/vcr-rationale/best writes
# the leaderboard CSV. Extra flags are passed on to VCR/run_vcr.py.
export MODE=${MODE:-answer}
export DATA_DIR=${DATA_DIR:-./X_VCR/}
export LOG_DIR=${LOG_DIR:-./logs/vcr-$MODE}
EPOCHS=8
if [ "$MODE" = rationale ]; then EPOCHS=12; fi
unset CUDA_VISIBLE_DEVICES
. "$(dirname "$0")/tools/launch.sh"

python -m paddle.distributed.launch $(gpus_flag "0,1,2,3") --log_dir $LOG_DIR VCR/run_vcr.py \
    --input_dir $DATA_DIR \
    --output_dir $LOG_DIR \
    --mode $MODE \
    --model_type visualbert \
    --model_name_or_path visualbert-vcr-pre \
    --batch_size 8 \
    --learning_rate 2e-5 \
    --warmup_proportion 0.1 \
    --max_seq_length 128 \
    --save_steps 5000 \
    --num_train_epochs $EPOCHS \
    "$@"
