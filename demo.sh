#!/usr/bin/env bash
# The whole pipeline on built-in demo data, on the CPU, in a few minutes:
#   demo data -> COCO-caption pretraining -> VQA2 fine-tuning -> VQA2 prediction (result.json)
#   -> official VQA evaluation -> NLVR2 fine-tuning -> NLVR2 prediction (CSV) -> NLVR2 evaluation
#   -> Flickr30K Entities grounding (import, fine-tune, ranked boxes, R@K, pictures)
#   -> VCR Q->A and QA->R fine-tuning (image encoder included) -> leaderboard CSV -> Q->A / QA->R / Q->AR
#   -> one question to the VQA model (python -m visualbert.ask, with its --explain picture)
# through the same scripts and flags a real run uses, with a tiny model. Re-running starts over.
# Outputs: X_COCO/, X_NLVR/, X_FLICKR/ and X_VCR/ (the data), logs/demo/<stage>/ (runs, predictions, metrics.png),
# logs/demo/logs/<n>-<stage>.log (each stage's full output; the screen shows a few lines of it).
set -euo pipefail
cd "$(dirname "$0")"
. tools/ensure_venv.sh

OUT=logs/demo
TINY=configs/visualbert-tiny.json
# caption matching needs more heads and a larger init to be learned next to masked LM in minutes
TINY_PRE=configs/visualbert-tiny-demo.json
# VCR: a tiny image encoder (one block per stage, 96 x 48 images) in the model config
TINY_VCR=configs/visualbert-tiny-vcr.json
# one process per core is faster than threads for a model this small; workers would compete
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# each stage's output goes through a pipe to its log and the screen: unbuffered, its lines arrive as they happen
export PYTHONUNBUFFERED=1
COMMON=(--device cpu --num_workers 0 --logging_steps 10 --seed 1)
rm -rf "$OUT"
mkdir -p "$OUT/logs"
SUMMARY="$OUT/summary.tsv"
printf 'stage\tmetric\tseconds\toutputs\n' > "$SUMMARY"
STAGES=$(grep -c '^stage "' "$0")
STAGE_NO=0

# What a stage shows on screen, from its full log: the size of its training, a progress line at each
# quarter of it with the evaluation at that point, and what it wrote. The rest (the launcher's
# configuration, where the features come from, a line per logging step) stays in the log file.
show_progress() {
    awk '
        function out(line) { print "      " line; fflush() }
        /^(training|answer vocabulary|resumed|done|stopped|warning|error):/ \
            || /^(wrote|extracted|imported|error) / { out($0); next }
        /^train: step [0-9]+\/[0-9]+/ {
            split($3, at, "/"); quarter = int(4 * at[1] / at[2])
            if (quarter > shown) { shown = quarter; out($0); show_eval = 1 }
            next
        }
        /^eval at step/ { if (show_eval) { out($0); show_eval = 0 } }
    '
}

stage() {  # stage NAME METRIC OUTPUTS -- command...: run with its output in a log file, time, record a summary row
    local name=$1 metric_cmd=$2 outputs=$3
    shift 4
    STAGE_NO=$((STAGE_NO + 1))
    local log
    log="$OUT/logs/$STAGE_NO-$(echo "$name" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9' '-' | sed 's/-$//').log"
    echo
    echo "[$STAGE_NO/$STAGES] $name  (full log: $log)"
    local t0=$SECONDS status
    # in the foreground, so that Ctrl-C reaches the stage's processes too
    set +e
    "$@" 2>&1 | tee "$log" | show_progress
    status=${PIPESTATUS[0]}
    set -e
    if [ "$status" -ne 0 ]; then
        echo "      FAILED (exit $status); the end of $log:"
        tail -n 20 "$log" | sed 's/^/      | /'
        exit $status
    fi
    local metric
    metric=$(eval "$metric_cmd")
    echo "      finished in $((SECONDS - t0)) s: $metric"
    printf '%s\t%s\t%s\t%s\n' "$name" "$metric" "$((SECONDS - t0))" "$outputs" >> "$SUMMARY"
}

best() {  # best RUN_DIR KEY...: those keys of the best evaluation (RUN_DIR/best/eval_results.json)
    python -c "import json,sys; r=json.load(open(sys.argv[1]+'/best/eval_results.json')); print(' '.join('%s %.4f' % (k, r[k]) for k in sys.argv[2:]), '(step %d)' % r['step'])" "$@"
}

echo "VisualBERT demo: demo data -> pretraining -> VQA2 and NLVR2 fine-tuning, prediction and official scores"
echo "-> Flickr30K grounding -> VCR -> asking the VQA model, on the CPU with a tiny model; each stage shows a few"
echo "lines here and keeps its full output in $OUT/logs/."

stage "demo data" "echo '-'" "X_COCO/ X_NLVR/ X_FLICKR/ X_VCR/" -- \
    python -m visualbert.demo --out_dir .

stage "COCO-caption pretraining" "best $OUT/vqa-coco-pre mlm_accuracy matching_accuracy" "$OUT/vqa-coco-pre/" -- \
    env LOG_DIR=$OUT/vqa-coco-pre sh vqa-coco-pretrain.sh --model_name_or_path $TINY_PRE \
        --train_batch_size 32 --learning_rate 1e-3 --num_train_epochs 20 --eval_steps 200 --save_steps 500 \
        "${COMMON[@]}"

# What and which colour are learned within the first epoch (48 steps), the yes/no questions naming a
# colour or object over the whole stage: evaluating every 8 steps draws both in the plot.
stage "VQA2 fine-tuning" "best $OUT/vqa vqa_accuracy" "$OUT/vqa/best/" -- \
    env LOG_DIR=$OUT/vqa sh vqa-finetune.sh --model_name_or_path $OUT/vqa-coco-pre \
        --train_split trainval --eval_split minival --batch_size 32 --learning_rate 3e-3 --num_train_epochs 6 \
        --eval_steps 8 --save_steps 100 "${COMMON[@]}"

stage "VQA2 prediction (test2015)" "echo \"\$(python -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' $OUT/vqa/result.json) answers\"" \
    "$OUT/vqa/result.json" -- \
    python VQA2/run_predict.py --input_dir X_COCO --model_name_or_path $OUT/vqa/best --split test \
        --output $OUT/vqa/result.json --device cpu --num_workers 0

stage "VQA2 official evaluation (minival)" \
    "python -c 'import json,sys; print(\"vqa accuracy\", json.load(open(sys.argv[1]))[\"percent\"][\"overall\"])' $OUT/vqa/eval_minival.json" \
    "$OUT/vqa/eval_minival.json" -- \
    bash -c "python VQA2/run_predict.py --input_dir X_COCO --model_name_or_path $OUT/vqa/best --split minival \
        --output $OUT/vqa/result_minival.json --device cpu --num_workers 0 && \
        python -m visualbert.evaluate vqa --result $OUT/vqa/result_minival.json \
        --annotations X_COCO/annotations/imdb_minival2014.npy > $OUT/vqa/eval_minival.json"

stage "NLVR2 fine-tuning" "best $OUT/nlvr2 accuracy" "$OUT/nlvr2/best/" -- \
    env LOG_DIR=$OUT/nlvr2 sh nlvr2-finetune.sh --model_name_or_path $TINY \
        --batch_size 32 --gradient_accumulation_steps 1 --learning_rate 1e-3 --num_train_epochs 10 \
        --save_steps 100 "${COMMON[@]}"

stage "NLVR2 prediction (test1)" "echo \"\$(wc -l < $OUT/nlvr2/predictions_test1.csv) predictions\"" \
    "$OUT/nlvr2/predictions_test1.csv" -- \
    python NLVR2/run_predict.py --input_dir X_NLVR --model_name_or_path $OUT/nlvr2/best --split test1 \
        --output $OUT/nlvr2/predictions_test1.csv --device cpu --num_workers 0

stage "NLVR2 evaluation (test1)" \
    "python -c 'import json,sys; r=json.load(open(sys.argv[1])); print(\"accuracy %.4f consistency %.4f\" % (r[\"accuracy\"], r[\"consistency\"]))' $OUT/nlvr2/eval_test1.json" \
    "$OUT/nlvr2/eval_test1.json" -- \
    bash -c "python -m visualbert.evaluate nlvr2 --predictions $OUT/nlvr2/predictions_test1.csv \
        --labels X_NLVR/annotations/test1.json > $OUT/nlvr2/eval_test1.json"

# Ten detections an image: chance R@1 is 10%. The store keeps each box, so the tiny config trains
# with the 6 box values appended to each region (add_spatial_features).
FLICKR=$OUT/flickr30k
stage "Flickr30K grounding (test)" \
    "python -c 'import json,sys; r=json.load(open(sys.argv[1]))[\"overall\"]; print(\"R@1 %.2f R@5 %.2f upper bound %.2f (chance 10)\" % (r[\"R@1\"], r[\"R@5\"], r[\"upper_bound\"]))' $FLICKR/eval_test.json" \
    "$FLICKR/" -- \
    bash -c "python -m visualbert.features import --format butd_tsv --src X_FLICKR/flickr30k_butd.tsv \
        --output_dir $FLICKR/features && \
        env LOG_DIR=$FLICKR/run DATA_DIR=X_FLICKR FEATURES=$FLICKR/features MODEL=$TINY sh flickr30k-finetune.sh \
        --batch_size 16 --learning_rate 2e-3 --num_train_epochs 4 --eval_split none --save_steps 100 ${COMMON[*]} && \
        python Flickr30K/run_predict.py --input_dir X_FLICKR --features $FLICKR/features --split test \
        --model_name_or_path $FLICKR/run --output $FLICKR/predictions_test.json --device cpu --num_workers 0 && \
        python -m visualbert.evaluate flickr30k --predictions $FLICKR/predictions_test.json \
        --annotation_dir X_FLICKR/Flickr30kEntities --split test --draw $FLICKR/drawn --draw_count 4 \
        | tee $FLICKR/eval_test.json"

# The person's colour (Q->A) is learned within 2 epochs (40 steps), the answer-rationale agreement (QA->R) within 3.
stage "VCR Q->A + QA->R, leaderboard CSV (val)" \
    "python -c 'import json,sys; r=json.load(open(sys.argv[1])); print(\"Q->A %.4f QA->R %.4f Q->AR %.4f\" % (r[\"q_a\"], r[\"qa_r\"], r[\"q_ar\"]))' $OUT/vcr/eval_val.json" \
    "$OUT/vcr/predictions_val.csv" -- \
    bash -c "env LOG_DIR=$OUT/vcr/answer MODE=answer sh vcr-finetune.sh --model_name_or_path $TINY_VCR \
        --batch_size 16 --learning_rate 2e-3 --num_train_epochs 2 --save_steps 100 ${COMMON[*]} && \
        env LOG_DIR=$OUT/vcr/rationale MODE=rationale sh vcr-finetune.sh --model_name_or_path $TINY_VCR \
        --batch_size 16 --learning_rate 2e-3 --num_train_epochs 3 --save_steps 100 ${COMMON[*]} && \
        python VCR/run_predict.py --input_dir X_VCR --split val --answer_model $OUT/vcr/answer/best \
        --rationale_model $OUT/vcr/rationale/best --output $OUT/vcr/predictions_val.csv --device cpu --num_workers 0 && \
        python -m visualbert.evaluate vcr --predictions $OUT/vcr/predictions_val.csv --labels X_VCR/val.jsonl \
        | tee $OUT/vcr/eval_val.json"

stage "plots" "echo '-'" "$OUT/*/metrics.png" -- \
    python -m visualbert.plot $OUT/vqa-coco-pre $OUT/vqa $OUT/nlvr2 $FLICKR/run $OUT/vcr/answer $OUT/vcr/rationale

# Using the trained model (README "Use a trained model"). The demo's features are made up in the
# Detectron layout, without pictures, so the question goes with one minival image's stored rows
# (--features/--key); for a model trained on `extract` features, --image photo.jpg does the same.
ask_the_model() {
    python -m visualbert.features pack --image_feature_type coco_detectron_fix_100 --input_dir X_COCO \
        --split val2014 --out $OUT/ask/feats
    local key
    key=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['keys'][0])" $OUT/ask/feats/index.json)
    python -m visualbert.ask --model $OUT/vqa/best --features $OUT/ask/feats --key "$key" \
        --question "what is in the picture?" --top_k 3 --explain $OUT/ask/explain.png | tee $OUT/ask/answers.txt
}

stage "Ask the VQA model" "sed -n 2p $OUT/ask/answers.txt" "$OUT/ask/explain.png" -- ask_the_model

echo
echo "=== summary ==="
column -t -s $'\t' "$SUMMARY"
echo
echo "Full logs: $OUT/logs/; plots: $OUT/*/metrics.png; runs, predictions and scores: $OUT/<stage>/."
