"""Task metrics, computed exactly as the official scorers compute them.

VQA accuracy follows GT-Vision-Lab/VQA ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` as of
commit a013f00 (2021-03-11, "Fixed processing answers bug"), the current official code and the
one the EvalAI leaderboard scores with; NLVR2 follows lil-lab/nlvr ``nlvr2/eval/metrics.py``;
Flickr30K Entities phrase grounding follows the original VisualBERT code (R@K over phrases, a box
counting when its IoU with one of the entity's boxes is >= 0.5).
VCR Q->A, QA->R and Q->AR follow rowanz/r2c.
Where the official code has a quirk that changes scores, it is mirrored on purpose and said so
next to the code, because a metric that is "more correct" than the leaderboard's is not
comparable with it.

The scoring functions take in-memory records so training code can call them during evaluation;
the files they come from (official annotations, result and prediction files) are read by
:mod:`visualbert.formats`, the readers training uses too, and ``visualbert.evaluate`` is a thin
command line over both. Nothing here imports Paddle.
"""
import re

import numpy as np

from .formats.common import describe_id_mismatch
from .formats.nlvr2 import nlvr2_sentence_key

# --------------------------------------------------------------------------------------------
# VQA answer normalisation
# --------------------------------------------------------------------------------------------

# Characters the official scorer removes (or turns into spaces, see _strip_punctuation).
# Periods and apostrophes are deliberately absent: periods have their own rule and apostrophes
# must survive so that the contraction table below can still see them.
_PUNCTUATION = tuple(";/[]\"{}()=+\\_-><@`,?!")

# "1,000"-style numbers: when one occurs anywhere, every punctuation mark is deleted, not spaced.
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")

# The official pattern reads like "a period not between digits", but its first group is written
# as a lookahead ``(?!<=\d)`` rather than a lookbehind, so in effect it only protects a period
# that is followed by a digit: "1.5" and ".5" keep theirs, "5." and "u.s" lose theirs.
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
# The official call passes ``re.UNICODE`` positionally, where ``Pattern.sub`` expects ``count``,
# so at most 32 periods are removed from one answer.
_PERIOD_STRIP_LIMIT = int(re.UNICODE)

_NUMBER_WORDS = dict(zip(
    "none zero one two three four five six seven eight nine ten".split(),
    "0    0    1   2   3     4    5    6   7     8     9    10".split(),
))

_ARTICLES = frozenset(("a", "an", "the"))


def _contraction_table():
    """Map the apostrophe-less spellings people type to the contraction the scorer compares.

    The official table is regular enough to be generated: a contraction with one apostrophe is
    looked up by its spelling without it ("dont" -> "don't"); one with several apostrophes by
    each spelling that misses exactly one of them ("hed've" and "he'dve" -> "he'd've", but not
    "hedve"). The few entries that break the pattern are added verbatim at the end.
    """
    contractions = """
        ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've
        hasn't haven't he'd he'd've he's how'd how'll how's I'd've I'm I've isn't it'd it'd've
        it'll ma'am mightn't mightn't've might've mustn't must've needn't not've o'clock oughtn't
        'ow's'at shan't she'd've should've shouldn't shouldn't've somebody'd've somebody'll
        somebody's someone'd someone'd've someone'll someone's something'd something'd've
        something'll that's there'd there'd've there're there's they'd they'd've they'll they're
        they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's where'd
        where's where've who'd who'd've who'll who's who've why'll why're why's won't would've
        wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've
    """.split()
    table = {}
    for word in contractions:
        cuts = [i for i, ch in enumerate(word) if ch == "'"]
        if len(cuts) == 1:
            table[word.replace("'", "")] = word
        else:
            for i in cuts:
                table[word[:i] + word[i + 1:]] = word
    # Irregular official entries: two identities, and one that runs backwards (it removes the
    # apostrophe from "somebody'd"); kept because they change what an answer normalises to.
    table.update({"let's": "let's", "she's": "she's", "somebody'd": "somebodyd"})
    return table


# Entries with capitals ("Im", "Ive", "Id've", "I'dve") never fire, because words are
# lowercased before the lookup; that is the official behaviour too.
_CONTRACTIONS = _contraction_table()


def _strip_punctuation(text):
    """The official processPunctuation: delete or space out punctuation, then strip periods.

    A mark is deleted when it touches a space anywhere in the answer ("yes , it is") or when the
    answer contains a "1,000"-style number; otherwise it sits inside a word and becomes a space
    ("black/white" -> "black white"). Both tests look at the input, not at the partly cleaned
    text, which is why the order of marks does not matter.
    """
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        touches_space = (mark + " ") in text or (" " + mark) in text
        out = out.replace(mark, "" if touches_space or has_digit_comma else " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_PERIOD_STRIP_LIMIT)


def _digits_articles_contractions(text):
    """The official processDigitArticle: lowercase, number words to digits, drop articles,
    restore contractions, and collapse runs of whitespace to one space."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def _clean_whitespace(text):
    # The one step vqaEval applies to every answer, human or predicted, whatever the question.
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_vqa_answer(text: str) -> str:
    """The full normalisation vqaEval.py gives an answer (human or predicted) when it normalises.

    Newlines and tabs become spaces, the ends are stripped, punctuation and periods are handled
    as in ``_strip_punctuation``, then words are lowercased, number words become digits, the
    articles a/an/the are dropped and apostrophe-less contractions get their apostrophe back.
    When this applies at all is decided per question, see ``vqa_question_accuracy``.
    """
    return _digits_articles_contractions(_strip_punctuation(_clean_whitespace(text)))


def vqa_soft_score(num_matches: int, num_answers: int = 10) -> float:
    """Official accuracy of a prediction that equals ``num_matches`` of the human answers.

    The scorer averages, over every way of leaving one human answer out, min(1, matches among
    the rest / 3). A left-out answer that matched leaves ``num_matches - 1`` matches, any other
    leaves ``num_matches``; with ten answers this gives 0, 0.3, 0.6, 0.9 and then 1.0.
    """
    if not 0 <= num_matches <= num_answers:
        raise ValueError(f"num_matches must be between 0 and {num_answers}, got {num_matches}")
    left_out_matched = min(1.0, (num_matches - 1) / 3) if num_matches else 0.0
    left_out_other = min(1.0, num_matches / 3)
    return (num_matches * left_out_matched + (num_answers - num_matches) * left_out_other) / num_answers


# --------------------------------------------------------------------------------------------
# VQA accuracy
# --------------------------------------------------------------------------------------------

def _mean_and_percent(values):
    # vqaEval rounds 100 * sum / count, not 100 * (sum / count); the two can differ in the last
    # bit, which decides the second decimal at exact ties.
    total = float(sum(values))
    return total / len(values), round(100 * total / len(values), 2)


def vqa_question_accuracy(prediction: str, answers: list) -> float:
    """Official accuracy of one predicted answer against the human answers of one question.

    The rule of vqaEval.py since commit a013f00: both sides get newlines and tabs turned into
    spaces and their ends stripped. Then, only if the human answers (so cleaned) are not all
    identical, both the human answers and the prediction are fully normalised
    (``normalize_vqa_answer``). When all humans agree nothing more is done to either side, so
    the prediction must equal their answer exactly: "Yes" or "yes." scores 0 against ten "yes"
    (the authors' reason: unanimous answers are often text read off the image, which normalising
    would corrupt). Before that commit the prediction was always normalised and the humans only
    had punctuation handled when they differed; scores under the two rules are not comparable.
    """
    if not answers:
        raise ValueError("a question needs at least one human answer to be scored")
    prediction = _clean_whitespace(prediction)
    answers = [_clean_whitespace(a) for a in answers]
    if len(set(answers)) > 1:
        prediction = normalize_vqa_answer(prediction)
        answers = [normalize_vqa_answer(a) for a in answers]
    # Leave each human answer out in turn (by position: repeated answers are separate people).
    per_subset = []
    for left_out in range(len(answers)):
        matches = sum(1 for i, a in enumerate(answers) if i != left_out and a == prediction)
        per_subset.append(min(1, float(matches) / 3))
    return float(sum(per_subset)) / len(per_subset)


def vqa_accuracy(predictions: dict, ground_truth: dict) -> dict:
    """VQA accuracy of ``predictions`` ({question_id: answer}) as vqaEval.py reports it.

    ``ground_truth`` maps question_id to ``{"answers": [ten strings], "answer_type": str or
    None, "question_type": str or None}``, as :func:`visualbert.formats.vqa.read_vqa_ground_truth`
    returns.
    Both must cover the same question ids, as the official ``loadRes`` insists.

    Returns fractions in [0, 1] (``overall``, ``per_answer_type``, ``per_question_type``,
    ``per_question``), ``num_questions``, and ``percent``: the same three summaries as
    vqaEval prints them, 100x and rounded to two decimals. Questions whose type is None are
    left out of that breakdown (imdb files carry no types).
    """
    if set(predictions) != set(ground_truth):
        raise ValueError("predictions do not match the ground truth: " + describe_id_mismatch(
            ground_truth, predictions, "question ids", "predictions", "ground truth"))
    if not ground_truth:
        raise ValueError("no questions to score: the ground truth is empty")
    per_question = {}
    by_answer_type, by_question_type = {}, {}
    for qid, gt in ground_truth.items():
        answer = predictions[qid]
        if not isinstance(answer, str):
            raise ValueError(f"question {qid}: predicted answer must be a string, got {answer!r}")
        if not gt["answers"]:
            raise ValueError(f"question {qid}: the ground truth has no human answers")
        score = vqa_question_accuracy(answer, list(gt["answers"]))
        per_question[qid] = score
        if gt.get("answer_type") is not None:
            by_answer_type.setdefault(gt["answer_type"], []).append(score)
        if gt.get("question_type") is not None:
            by_question_type.setdefault(gt["question_type"], []).append(score)

    overall, overall_pct = _mean_and_percent(list(per_question.values()))
    answer_types = {t: _mean_and_percent(v) for t, v in by_answer_type.items()}
    question_types = {t: _mean_and_percent(v) for t, v in by_question_type.items()}
    return {
        "overall": overall,
        "per_answer_type": {t: f for t, (f, _) in answer_types.items()},
        "per_question_type": {t: f for t, (f, _) in question_types.items()},
        "per_question": per_question,
        "num_questions": len(per_question),
        "percent": {
            "overall": overall_pct,
            "per_answer_type": {t: p for t, (_, p) in answer_types.items()},
            "per_question_type": {t: p for t, (_, p) in question_types.items()},
        },
    }


# --------------------------------------------------------------------------------------------
# NLVR2 accuracy and consistency
# --------------------------------------------------------------------------------------------

def nlvr2_scores(predictions: dict, labels: dict) -> dict:
    """Accuracy and consistency of ``predictions`` ({identifier: bool}) against ``labels``.

    Consistency is the share of sentences whose every image pair is predicted right, as
    lil-lab/nlvr metrics.py computes it. Every labelled example must have exactly one
    prediction, and no prediction may name an unlabelled example.
    """
    if set(predictions) != set(labels):
        raise ValueError("predictions do not match the labels: " + describe_id_mismatch(
            labels, predictions, "identifiers", "predictions", "labels"))
    if not labels:
        raise ValueError("no examples to score: the labels are empty")
    correct = 0
    sentence_consistent = {}
    for identifier, label in labels.items():
        right = bool(predictions[identifier]) == bool(label)
        correct += right
        key = nlvr2_sentence_key(identifier)
        sentence_consistent[key] = sentence_consistent.get(key, True) and right
    return {
        "accuracy": correct / len(labels),
        "consistency": sum(sentence_consistent.values()) / len(sentence_consistent),
        "num_examples": len(labels),
        "num_sentences": len(sentence_consistent),
    }


# --------------------------------------------------------------------------------------------
# Flickr30K Entities: phrase grounding
# --------------------------------------------------------------------------------------------

GROUNDING_IOU = 0.5  # a box grounds a phrase when its IoU with one of the entity's boxes is at least this
GROUNDING_KS = (1, 5, 10)


def box_iou(a, b):
    """IoU of every box of ``a`` [N, 4] with every box of ``b`` [M, 4] (x1, y1, x2, y2) -> [N, M].

    Areas are (x2 - x1) * (y2 - y1), as the original code's ``calculate_iou``. The value does not
    change when both sets are scaled by the same factor per axis, so boxes normalised by the image
    size give the IoU of their pixel boxes.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 2], b[None, :, 2])
    bottom = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def grounding_hits(ground_truth_boxes, boxes):
    """bool [M]: which of ``boxes`` [M, 4] ground a phrase whose entity has ``ground_truth_boxes`` [G, 4]."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=bool)
    return (box_iou(ground_truth_boxes, boxes) >= GROUNDING_IOU).any(axis=0)


def grounding_recall(phrases, ks=GROUNDING_KS):
    """R@K and the upper bound of ranked boxes, overall and per entity type.

    ``phrases``: (types, ranked_hits) per phrase, ``ranked_hits`` a bool sequence over the phrase's
    boxes in the model's order (True = grounds it). R@K is the share of phrases with a True among
    their first K; the upper bound the share with a True anywhere (what the detections allow). A
    phrase of several types counts once overall and once under each type. Percentages, two decimals.
    """
    totals = {}
    for types, hits in phrases:
        hits = np.asarray(hits, dtype=bool)
        row = [bool(hits[:k].any()) for k in ks] + [bool(hits.any())]
        for group in ["overall"] + [f"type:{t}" for t in dict.fromkeys(types)]:
            count, sums = totals.setdefault(group, [0, np.zeros(len(row))])
            totals[group][0] = count + 1
            sums += row
    if "overall" not in totals:
        raise ValueError("no phrases to score")

    def summary(count, sums):
        out = {f"R@{k}": round(100 * float(v) / count, 2) for k, v in zip(ks, sums)}
        out["upper_bound"] = round(100 * float(sums[-1]) / count, 2)
        out["phrases"] = count
        return out

    return {"overall": summary(*totals["overall"]),
            "per_type": {g[len("type:"):]: summary(*totals[g]) for g in sorted(totals) if g != "overall"}}


# --------------------------------------------------------------------------------------------
# VCR: Q->A, QA->R, Q->AR
# --------------------------------------------------------------------------------------------

def _argmax(values):
    return max(range(len(values)), key=lambda j: values[j])  # the first of equal scores, as numpy's


def vcr_scores(predictions: dict, labels: dict) -> dict:
    """Q->A, QA->R and Q->AR accuracy of ``predictions`` against ``labels``.

    ``predictions``: {annot_id: {"answer": 4 scores, "rationale": 4 x 4 scores (row i: conditioned
    on answer i)}}; ``labels``: {annot_id: (answer_label, rationale_label)}. QA->R picks among the
    rationales conditioned on the right answer; Q->AR counts a question when the picked answer is
    right and so is the rationale picked given it.
    """
    if set(predictions) != set(labels):
        raise ValueError("predictions do not match the labels: " + describe_id_mismatch(
            labels, predictions, "annot_ids", "predictions", "labels"))
    if not labels:
        raise ValueError("no questions to score: the labels are empty")
    q_a = qa_r = q_ar = 0
    for annot_id, (answer, rationale) in labels.items():
        scores = predictions[annot_id]
        answer_right = _argmax(scores["answer"]) == answer
        rationale_right = _argmax(scores["rationale"][answer]) == rationale
        q_a += answer_right
        qa_r += rationale_right
        q_ar += answer_right and rationale_right
    n = len(labels)
    return {"q_a": q_a / n, "qa_r": qa_r / n, "q_ar": q_ar / n, "num_questions": n}
