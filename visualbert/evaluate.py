"""Score prediction files the way the official VQA, NLVR2 and VCR scorers do.

    python -m visualbert.evaluate vqa --result RESULT.json --annotations ANN.json [--questions Q.json]
    python -m visualbert.evaluate nlvr2 --predictions P.csv --labels SPLIT.json
    python -m visualbert.evaluate vcr --predictions P.csv --labels val.jsonl

Scores are printed to stdout as JSON. The scoring itself lives in ``visualbert.metrics`` so that
training code computes the very same numbers without going through files.
"""
import argparse
import json
import pickle
import sys

from visualbert import metrics


def evaluate_vqa(result, annotations, questions=None):
    """Official VQA accuracy of a result file: percentages as vqaEval prints them, plus fractions.

    Breakdowns by answer and question type are left out when the ground truth has no types
    (imdb files), rather than reported under a made-up type.
    """
    ground_truth = metrics.load_vqa_ground_truth(annotations, questions)
    predictions = metrics.load_vqa_result(result)
    if set(predictions) != set(ground_truth):
        raise ValueError(f"{result} does not match {annotations}: " + metrics.describe_id_mismatch(
            ground_truth, predictions, "question ids", "result file", "annotations"))
    scores = metrics.vqa_accuracy(predictions, ground_truth)

    def summary(overall, per_answer_type, per_question_type):
        out = {"overall": overall}
        if per_answer_type:
            out["per_answer_type"] = per_answer_type
        if per_question_type:
            out["per_question_type"] = per_question_type
        return out

    return {
        "num_questions": scores["num_questions"],
        "percent": summary(**scores["percent"]),
        "fraction": summary(scores["overall"], scores["per_answer_type"], scores["per_question_type"]),
    }


def evaluate_nlvr2(predictions, labels):
    """NLVR2 accuracy and consistency of a predictions CSV against a split's JSON lines."""
    gold = metrics.load_nlvr2_labels(labels)
    predicted = metrics.load_nlvr2_predictions(predictions)
    if set(predicted) != set(gold):
        raise ValueError(f"{predictions} does not match {labels}: " + metrics.describe_id_mismatch(
            gold, predicted, "identifiers", "predictions", "labels"))
    return metrics.nlvr2_scores(predicted, gold)


def evaluate_vcr(predictions, labels):
    """Q->A, QA->R and Q->AR accuracy of a VCR leaderboard CSV against a labelled split's jsonl."""
    gold = metrics.load_vcr_labels(labels)
    predicted = metrics.load_vcr_predictions(predictions)
    if set(predicted) != set(gold):
        raise ValueError(f"{predictions} does not match {labels}: " + metrics.describe_id_mismatch(
            gold, predicted, "annot_ids", "predictions", "labels"))
    return metrics.vcr_scores(predicted, gold)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m visualbert.evaluate",
        description="Score VQA, NLVR2 or VCR predictions with the official metrics; prints JSON.",
    )
    tasks = parser.add_subparsers(dest="task", required=True, metavar="{vqa,nlvr2,vcr}")

    vqa = tasks.add_parser(
        "vqa", help="VQA accuracy as GT-Vision-Lab vqaEval.py computes it",
        description="VQA accuracy as GT-Vision-Lab vqaEval.py computes it since commit a013f00 "
                    "(2021): answers are normalised (punctuation, case, number words, articles) only "
                    "for questions whose human answers differ; where all agree, the answer must match "
                    "them exactly. Reports overall, per answer type and per question type, in percent "
                    "(2 decimals) and as fractions. The result file must answer exactly the annotated "
                    "questions.")
    vqa.add_argument("--result", required=True, metavar="RESULT.json",
                     help='JSON list of {"question_id": int, "answer": str} (the EvalAI format)')
    vqa.add_argument("--annotations", required=True, metavar="ANN.json",
                     help="v2_mscoco_*_annotations.json, or a Pythia/MMF imdb .npy with answers "
                          "(or valid_answers) per question (no answer/question types, so no breakdowns)")
    vqa.add_argument("--questions", metavar="Q.json",
                     help="v2_OpenEnded_mscoco_*_questions.json; checked to cover the same questions")

    nlvr2 = tasks.add_parser(
        "nlvr2", help="NLVR2 accuracy and consistency as lil-lab/nlvr metrics.py computes them",
        description="NLVR2 accuracy, and consistency: the share of sentences whose every image "
                    "pair is predicted right. Every labelled example needs exactly one prediction.")
    nlvr2.add_argument("--predictions", required=True, metavar="P.csv",
                       help="CSV lines identifier,True|False")
    nlvr2.add_argument("--labels", required=True, metavar="SPLIT.json",
                       help="the NLVR2 split file: JSON lines with identifier and label")

    vcr = tasks.add_parser(
        "vcr", help="VCR Q->A, QA->R and Q->AR accuracy from the leaderboard CSV",
        description="VCR accuracy: Q->A (the highest-scored answer is right), QA->R (the highest-scored "
                    "rationale given the right answer is right) and Q->AR (both). Every labelled question "
                    "needs exactly one row.")
    vcr.add_argument("--predictions", required=True, metavar="P.csv",
                     help="the leaderboard CSV: annot_id, answer_0..3, rationale_conditioned_on_a{i}_{j} "
                          "(VCR/run_predict.py writes it)")
    vcr.add_argument("--labels", required=True, metavar="SPLIT.jsonl",
                     help="the labelled VCR split (val.jsonl or train.jsonl)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.task == "vqa":
            scores = evaluate_vqa(args.result, args.annotations, args.questions)
        elif args.task == "nlvr2":
            scores = evaluate_nlvr2(args.predictions, args.labels)
        else:
            scores = evaluate_vcr(args.predictions, args.labels)
    # Bad input files are the user's to fix, so they get one line, not a traceback.
    except (OSError, ValueError, pickle.UnpicklingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    json.dump(scores, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
