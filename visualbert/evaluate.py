"""Score prediction files the way the official VQA, NLVR2 and VCR scorers (and the original VisualBERT's
Flickr30K code) do.

    python -m visualbert.evaluate vqa --result RESULT.json --annotations ANN.json [--questions Q.json]
    python -m visualbert.evaluate nlvr2 --predictions P.csv --labels SPLIT.json
    python -m visualbert.evaluate flickr30k --predictions P.json --annotation_dir Flickr30kEntities/ [--split test]
    python -m visualbert.evaluate vcr --predictions P.csv --labels val.jsonl

Scores are printed to stdout as JSON. The files are read by ``visualbert.formats`` and the scoring
lives in ``visualbert.metrics``, so that training code reads the same files and computes the very same
numbers.
"""
import argparse
import json
import os
import sys

from visualbert import metrics
from visualbert.argtypes import positive_int
from visualbert.atomic import write_file
from visualbert.errors import run_command
from visualbert.formats.common import check_ids_match
from visualbert.formats.flickr30k import read_flickr30k, read_flickr30k_image_list, read_grounding_predictions
from visualbert.formats.nlvr2 import read_nlvr2_labels, read_nlvr2_predictions
from visualbert.formats.vcr import read_vcr_labels, read_vcr_predictions
from visualbert.formats.vqa import read_vqa_ground_truth, read_vqa_result


def evaluate_vqa(result, annotations, questions=None):
    """Official VQA accuracy of a result file: percentages as vqaEval prints them, plus fractions.

    Breakdowns by answer and question type are left out when the ground truth has no types
    (imdb files), rather than reported under a made-up type.
    """
    ground_truth = read_vqa_ground_truth(annotations, questions)
    predictions = read_vqa_result(result)
    check_ids_match(result, predictions, annotations, ground_truth, "question ids", "result file", "annotations")
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
    gold = read_nlvr2_labels(labels)
    predicted = read_nlvr2_predictions(predictions)
    check_ids_match(predictions, predicted, labels, gold, "identifiers", "predictions", "labels")
    return metrics.nlvr2_scores(predicted, gold)


def evaluate_flickr30k(predictions, annotation_dir, split=None, draw=None, draw_count=8, image_dir=None):
    """R@1 / R@5 / R@10 and the upper bound of a ranked-box file, overall and per entity type.

    The phrases scored are the boxed phrases of ``split`` (an image list name under
    ``annotation_dir`` or a file), or of the images the file covers; each needs its ranked boxes.
    ``draw``: a folder for pictures of the first ``draw_count`` phrases (see ``draw_grounding``).
    """
    predicted = read_grounding_predictions(predictions)
    if split:
        list_path = split if os.path.isfile(split) else os.path.join(annotation_dir, f"{split}.txt")
        image_ids = read_flickr30k_image_list(list_path)
    else:
        image_ids = sorted({key[0] for key in predicted})
    examples, summary = read_flickr30k(annotation_dir, image_ids)
    truth = {(ex["image_id"], ex["caption_index"], p["phrase_index"]): (ex, p)
             for ex in examples for p in ex["phrases"]}
    check_ids_match(predictions, predicted, annotation_dir, truth, "phrases (image, caption, phrase)", "predictions",
                    "annotations")
    scores = metrics.grounding_recall(
        (p["types"], metrics.grounding_hits(p["boxes"], predicted[key])) for key, (_, p) in truth.items())
    scores["left_out_phrases"] = dict(summary["left_out"])
    if draw:
        scores["drawn"] = draw_grounding(draw, list(truth.items())[:draw_count], predicted, image_dir)
    return scores


def draw_grounding(out_dir, phrases, predicted, image_dir=None):
    """One PNG per phrase: the image (or a grey canvas of its size without ``image_dir``) with the
    entity's ground-truth boxes in green, the top-ranked box in red, and the caption below with the
    phrase in red. Returns the paths written."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=15)  # a scalable font (Pillow >= 10.1)
    except TypeError:
        font = ImageFont.load_default()

    os.makedirs(out_dir, exist_ok=True)
    written = []
    for (image_id, caption, phrase_index), (ex, phrase) in phrases:
        size = (int(ex["width"]), int(ex["height"]))
        photo = None
        for ext in (".jpg", ".jpeg", ".png"):
            path = os.path.join(image_dir, image_id + ext) if image_dir else None
            if path and os.path.isfile(path):
                photo = Image.open(path).convert("RGB").resize(size)
                break
        canvas = Image.new("RGB", (size[0], size[1] + 40), "white")
        canvas.paste(photo or Image.new("RGB", size, (200, 200, 200)), (0, 0))
        pen = ImageDraw.Draw(canvas)
        for box in phrase["boxes"]:
            pen.rectangle(box, outline=(0, 160, 0), width=3)
        top = predicted[(image_id, caption, phrase_index)]
        if len(top):
            pen.rectangle([float(v) for v in top[0]], outline=(220, 0, 0), width=2)
        # the whole caption in black, then the phrase over it in red; a "|" measures trailing spaces too
        pen.text((4, size[1] + 12), ex["sentence"], fill="black", font=font)
        before = ex["sentence"][:phrase["start"]]
        x = 4 + pen.textlength(before + "|", font=font) - pen.textlength("|", font=font)
        pen.text((x, size[1] + 12), phrase["text"], fill=(220, 0, 0), font=font)
        path = os.path.join(out_dir, f"{image_id}_{caption}_{phrase_index}.png")
        write_file(path, lambda f: canvas.save(f, format="PNG"), binary=True)
        written.append(path)
    return written


def evaluate_vcr(predictions, labels):
    """Q->A, QA->R and Q->AR accuracy of a VCR leaderboard CSV against a labelled split's jsonl."""
    gold = read_vcr_labels(labels)
    predicted = read_vcr_predictions(predictions)
    check_ids_match(predictions, predicted, labels, gold, "annot_ids", "predictions", "labels")
    return metrics.vcr_scores(predicted, gold)


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
        description="Score VQA, NLVR2, Flickr30K Entities or VCR predictions with the official metrics; prints JSON.",
    )
    tasks = parser.add_subparsers(dest="task", required=True, metavar="{vqa,nlvr2,flickr30k,vcr}")

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

    flickr = tasks.add_parser(
        "flickr30k", help="Flickr30K Entities phrase grounding: R@1 / R@5 / R@10 and the upper bound",
        description="Phrase grounding as the original VisualBERT scored it: per phrase, a box counts when its IoU "
                    "with one of the entity's ground-truth boxes is >= 0.5; R@K is the share of phrases with such a "
                    "box among their K best, the upper bound the share with one among all their boxes. Overall "
                    "and per entity type, in percent (2 decimals). Phrases whose entity has no box are left out, "
                    "as in training.")
    flickr.add_argument("--predictions", required=True, metavar="P.json",
                        help="Flickr30K/run_predict.py's ranked boxes")
    flickr.add_argument("--annotation_dir", required=True, metavar="DIR",
                        help="the Flickr30K Entities release: Sentences/, Annotations/, the image lists")
    flickr.add_argument("--split", default=None,
                        help="score the phrases of this image list (train / val / test or a file); default: the "
                             "images the predictions cover")
    flickr.add_argument("--draw", default=None, metavar="DIR",
                        help="also draw phrases into DIR: ground-truth boxes green, the top box red, the phrase "
                             "red in the caption below")
    flickr.add_argument("--draw_count", type=positive_int, default=8, help="how many phrases --draw draws (default 8)")
    flickr.add_argument("--image_dir", default=None,
                        help="the Flickr30K images (<image_id>.jpg) for --draw; without it, a grey canvas")
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
    def work():
        if args.task == "vqa":
            scores = evaluate_vqa(args.result, args.annotations, args.questions)
        elif args.task == "nlvr2":
            scores = evaluate_nlvr2(args.predictions, args.labels)
        elif args.task == "flickr30k":
            scores = evaluate_flickr30k(args.predictions, args.annotation_dir, args.split, args.draw, args.draw_count,
                                        args.image_dir)
        else:
            scores = evaluate_vcr(args.predictions, args.labels)
        json.dump(_rounded(scores), sys.stdout, indent=2)
        sys.stdout.write("\n")

    return run_command(work)


if __name__ == "__main__":
    sys.exit(main())
