#!/bin/sh
# Fine-tune on Flickr30K Entities phrase grounding (region-to-phrase alignment) with the original
# fine-tuning config's settings: batch 32, learning rate 2e-5, 5 epochs, warmup 0.1, the 6 box values
# appended to each region (add_spatial_features; the model's config decides). Regions: the 10-100 box
# bottom-up-attention features imported with their boxes (README, "Flickr30K Entities").
# Extra flags are passed on to Flickr30K/run_flickr30k.py.
export DATA_DIR=${DATA_DIR:-./X_FLICKR/}
export FEATURES=${FEATURES:-$DATA_DIR/features}
export MODEL=${MODEL:-./logs/flickr30k-coco-pre/best}
export LOG_DIR=${LOG_DIR:-./logs/flickr30k}
unset CUDA_VISIBLE_DEVICES
. "$(dirname "$0")/tools/launch.sh"

python -m paddle.distributed.launch $(gpus_flag "0") --log_dir $LOG_DIR Flickr30K/run_flickr30k.py \
    --input_dir $DATA_DIR \
    --features $FEATURES \
    --output_dir $LOG_DIR \
    --model_type visualbert \
    --model_name_or_path $MODEL \
    --batch_size 32 \
    --learning_rate 2e-5 \
    --warmup_proportion 0.1 \
    --num_train_epochs 5 \
    "$@"
