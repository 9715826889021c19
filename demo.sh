#!/usr/bin/env bash
# The whole pipeline on built-in demo data, on the CPU, in a few minutes:
#   demo data -> COCO-caption pretraining -> VQA2 fine-tuning -> VQA2 prediction (result.json)
#   -> official VQA evaluation -> NLVR2 fine-tuning -> NLVR2 prediction (CSV) -> NLVR2 evaluation
# through the same scripts and flags a real run uses, with a tiny model. Re-running starts over.
# Outputs: X_COCO/ and X_NLVR/ (the data), logs/demo/<stage>/ (runs, predictions, metrics.png),
# logs/demo/logs/<n>-<stage>.log (each stage's full output; the screen shows a few lines of it).
set -euo pipefail
cd "$(dirname "$0")"
. tools/ensure_venv.sh

OUT=logs/demo
TINY=configs/visualbert-tiny.json
# caption matching needs more heads and a larger init to be learned next to masked LM in minutes
TINY_PRE=configs/visualbert-tiny-demo.json
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

echo "VisualBERT demo: demo data -> pretraining -> VQA2 and NLVR2 fine-tuning, prediction and official scores,"
echo "on the CPU with a tiny model; each stage shows a few lines here and keeps its full output in $OUT/logs/."

stage "demo data" "echo '-'" "X_COCO/ X_NLVR/" -- \
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

stage "plots" "echo '-'" "$OUT/*/metrics.png" -- \
    python -m visualbert.plot $OUT/vqa-coco-pre $OUT/vqa $OUT/nlvr2

echo
echo "=== summary ==="
column -t -s $'\t' "$SUMMARY"
echo
echo "Full logs: $OUT/logs/; plots: $OUT/*/metrics.png; runs, predictions and scores: $OUT/<stage>/."
