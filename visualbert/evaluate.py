"""Score prediction files the way the official VQA and NLVR2 scorers do.

    python -m visualbert.evaluate vqa --result RESULT.json --annotations ANN.json [--questions Q.json]
    python -m visualbert.evaluate nlvr2 --predictions P.csv --labels SPLIT.json

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


def _rounded(value, digits=6):
    """Scores as a reader wants them: 0.95625, not 0.9562500000000002 (the sums of per-question floats)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m visualbert.evaluate",
        description="Score VQA or NLVR2 predictions with the official metrics; prints JSON.",
    )
    tasks = parser.add_subparsers(dest="task", required=True, metavar="{vqa,nlvr2}")

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
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.task == "vqa":
            scores = evaluate_vqa(args.result, args.annotations, args.questions)
        else:
            scores = evaluate_nlvr2(args.predictions, args.labels)
    # Bad input files are the user's to fix, so they get one line, not a traceback.
    except (OSError, ValueError, pickle.UnpicklingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    json.dump(_rounded(scores), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
