"""Task metrics, computed exactly as the official scorers compute them.

VQA accuracy follows GT-Vision-Lab/VQA ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` as of
commit a013f00 (2021-03-11, "Fixed processing answers bug"), the current official code and the
one the EvalAI leaderboard scores with; NLVR2 follows lil-lab/nlvr ``nlvr2/eval/metrics.py``;
Flickr30K Entities phrase grounding follows the original VisualBERT code (R@K over phrases, a box
counting when its IoU with one of the entity's boxes is >= 0.5).
VCR reads and writes the leaderboard CSV of rowanz/r2c ``models/eval_for_leaderboard.py``.
Where the official code has a quirk that changes scores, it is mirrored on purpose and said so
next to the code, because a metric that is "more correct" than the leaderboard's is not
comparable with it.

The scoring functions take in-memory dicts so training code can call them during evaluation;
the ``load_*`` functions turn the official files into those dicts (imdb and NLVR2 files through
``visualbert.annotations``, the reader training uses too), and ``visualbert.evaluate`` is a thin
command line over both. Nothing here imports Paddle.
"""
import csv
import json
import math
import os
import re

import numpy as np

from visualbert.annotations import integer_id, read_nlvr2, read_vqa_imdb
from visualbert.annotations import VCR_NUM_CHOICES, integer_id, read_nlvr2, read_vcr, read_vqa_imdb

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

def describe_id_mismatch(expected, got, what, got_name, expected_name, limit=5):
    """One line saying which ids one side lacks and which it has in excess, with examples."""
    missing = sorted(set(expected) - set(got), key=str)
    extra = sorted(set(got) - set(expected), key=str)
    parts = []
    if missing:
        shown = ", ".join(map(str, missing[:limit]))
        parts.append(f"{len(missing)} {what} missing from the {got_name} (e.g. {shown})")
    if extra:
        shown = ", ".join(map(str, extra[:limit]))
        parts.append(f"{len(extra)} {what} in the {got_name} are not in the {expected_name} (e.g. {shown})")
    return "; ".join(parts)


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
    None, "question_type": str or None}``, as the ``load_vqa_ground_truth`` loader returns.
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

def nlvr2_sentence_key(identifier: str) -> str:
    """The sentence an NLVR2 example belongs to: its identifier with the image-pair field blanked.

    "dev-850-2-0" -> "dev-850--0": every image pair the same sentence was written for shares it.
    """
    fields = identifier.split("-")
    if len(fields) < 3:
        raise ValueError(f"NLVR2 identifier {identifier!r} is not of the form split-set-pair-sentence")
    fields[2] = ""
    return "-".join(fields)


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
# VCR: Q->A, QA->R, Q->AR and the leaderboard CSV
# --------------------------------------------------------------------------------------------

# rowanz/r2c eval_for_leaderboard.py: the index column, the four answer probabilities, then for
# each answer i the four rationale probabilities when the context ends with answer i.
VCR_CSV_COLUMNS = ("annot_id", *(f"answer_{j}" for j in range(VCR_NUM_CHOICES)),
                   *(f"rationale_conditioned_on_a{i}_{j}" for i in range(VCR_NUM_CHOICES) for j in range(VCR_NUM_CHOICES)))


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


def vcr_csv_rows(predictions: dict):
    """The leaderboard CSV of ``predictions`` (as :func:`vcr_scores` takes them), header first."""
    yield VCR_CSV_COLUMNS
    for annot_id, scores in predictions.items():
        yield (annot_id, *(repr(float(p)) for p in scores["answer"]),
               *(repr(float(p)) for row in scores["rationale"] for p in row))


def load_vcr_labels(path) -> dict:
    """{annot_id: (answer_label, rationale_label)} of a labelled VCR split (train/val jsonl)."""
    return {item["annot_id"]: (item["answer_label"], item["rationale_label"]) for item in read_vcr(path)}


def load_vcr_predictions(path) -> dict:
    """A VCR leaderboard CSV (header ``VCR_CSV_COLUMNS``) as {annot_id: {"answer", "rationale"}}."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (expected the VCR leaderboard CSV: annot_id, answer_0..3, "
                                "rationale_conditioned_on_a{i}_{j})")
    predictions = {}
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or tuple(h.strip() for h in header) != VCR_CSV_COLUMNS:
            raise ValueError(f"{path}:1: expected the header {','.join(VCR_CSV_COLUMNS[:6])},...,"
                             f"{VCR_CSV_COLUMNS[-1]} ({len(VCR_CSV_COLUMNS)} columns)")
        for lineno, row in enumerate(rows, start=2):
            if not row:
                continue
            where = f"{path}:{lineno}"
            if len(row) != len(VCR_CSV_COLUMNS):
                raise ValueError(f"{where}: {len(row)} fields, expected {len(VCR_CSV_COLUMNS)}")
            try:
                values = [float(v) for v in row[1:]]
            except ValueError:
                raise ValueError(f"{where}: the probabilities must be numbers") from None
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"{where}: a probability is not finite")
            annot_id = row[0]
            if annot_id in predictions:
                raise ValueError(f"{where}: annot_id {annot_id} appears twice")
            k = VCR_NUM_CHOICES
            predictions[annot_id] = {"answer": values[:k],
                                     "rationale": [values[k * (i + 1):k * (i + 2)] for i in range(k)]}
    return predictions


# --------------------------------------------------------------------------------------------
# File loaders
# --------------------------------------------------------------------------------------------

def _read_json(path, expected):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (expected {expected})")
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e}); expected {expected}") from None


def load_vqa_ground_truth(path, questions=None) -> dict:
    """Ground truth for ``vqa_accuracy`` from official annotations or a Pythia/MMF imdb.

    ``path`` is a ``v2_mscoco_*_annotations.json`` or an imdb ``.npy`` (read with the restricted
    unpickler: imdb files come from the internet and a plain pickle load would run their code).
    ``questions``, an optional ``v2_OpenEnded_mscoco_*_questions.json``, must cover the same
    question ids (a guard against pairing files of different splits) and adds the question text.

    Returns {question_id: {"answers": [str], "answer_type", "question_type", "question"}}, in
    file order; types and question are None where the file does not give them.
    """
    path = os.fspath(path)
    if path.endswith(".npy"):
        ground_truth = {q["question_id"]: {"answers": q["answers"], "answer_type": None, "question_type": None,
                                           "question": q["question_str"]}
                        for q in read_vqa_imdb(path, need=("answers",))}
    else:
        data = _read_json(path, "a VQA annotations JSON with an 'annotations' list")
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise ValueError(f"{path}: expected a VQA annotations file, a JSON object with an "
                             "'annotations' list")
        ground_truth = {}
        for index, ann in enumerate(data["annotations"]):
            where = f"{path}: annotation {index}"
            if not isinstance(ann, dict):
                raise ValueError(f"{where} is not a JSON object")
            missing = [k for k in ("question_id", "answers", "answer_type", "question_type") if k not in ann]
            if missing:
                raise ValueError(f"{where} lacks {', '.join(map(repr, missing))}")
            qid = integer_id(ann["question_id"], where)
            answers = ann["answers"]
            if not isinstance(answers, list) or not answers or not all(
                    isinstance(a, dict) and isinstance(a.get("answer"), str) for a in answers):
                raise ValueError(f"{where} (question {qid}): 'answers' must be a non-empty list of "
                                 "{\"answer\": str, ...} objects")
            if qid in ground_truth:
                raise ValueError(f"{where}: question {qid} appears twice")
            ground_truth[qid] = {
                "answers": [a["answer"] for a in answers],
                "answer_type": ann["answer_type"],
                "question_type": ann["question_type"],
                "question": None,
            }
        if not ground_truth:
            raise ValueError(f"{path}: the annotations list is empty")

    if questions is not None:
        questions = os.fspath(questions)
        data = _read_json(questions, "a VQA questions JSON with a 'questions' list")
        if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
            raise ValueError(f"{questions}: expected a VQA questions file, a JSON object with a "
                             "'questions' list")
        texts = {}
        for index, q in enumerate(data["questions"]):
            if not isinstance(q, dict) or "question_id" not in q:
                raise ValueError(f"{questions}: question {index} has no question_id")
            texts[integer_id(q["question_id"], f"{questions}: question {index}")] = q.get("question")
        if set(texts) != set(ground_truth):
            raise ValueError(f"{questions} does not match {path}: " + describe_id_mismatch(
                ground_truth, texts, "question ids", "questions file", "annotations"))
        for qid, text in texts.items():
            ground_truth[qid]["question"] = text
    return ground_truth


def load_vqa_result(path) -> dict:
    """Predictions from a VQA result file (the EvalAI upload format) as {question_id: answer}.

    The file is a JSON list of {"question_id": int, "answer": str}, one per question.
    """
    path = os.fspath(path)
    data = _read_json(path, 'a JSON list of {"question_id": int, "answer": str}')
    if not isinstance(data, list):
        raise ValueError(f'{path}: expected a JSON list of {{"question_id": int, "answer": str}}, '
                         f"found a {type(data).__name__}")
    predictions = {}
    for index, item in enumerate(data):
        where = f"{path}: result {index}"
        if not isinstance(item, dict) or "question_id" not in item or "answer" not in item:
            raise ValueError(f'{where} is not an object with "question_id" and "answer"')
        qid = integer_id(item["question_id"], where)
        if not isinstance(item["answer"], str):
            raise ValueError(f"{where} (question {qid}): answer must be a string, got {item['answer']!r}")
        if qid in predictions:
            raise ValueError(f"{where}: question {qid} is answered twice (expected one answer per question)")
        predictions[qid] = item["answer"]
    return predictions


def _parse_bool(text, where):
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"{where}: expected True or False, got {text.strip()!r}")
    return value == "true"


def load_nlvr2_labels(path) -> dict:
    """Labels of an NLVR2 split file (JSON lines with identifier and label) as {identifier: bool}."""
    return {ex["identifier"]: ex["label"] for ex in read_nlvr2(path)}


def load_nlvr2_predictions(path) -> dict:
    """Predictions from an NLVR2 CSV (lines ``identifier,True|False``) as {identifier: bool}.

    Case is ignored, as the official scorer lowercases both sides before comparing.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (expected CSV lines identifier,True|False)")
    predictions = {}
    # utf-8-sig: spreadsheets save CSV with a byte-order mark, which would otherwise become part of line 1's identifier
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            fields = line.strip().split(",")
            if len(fields) != 2:
                raise ValueError(f"{where}: expected identifier,True|False, got {line.strip()!r}")
            identifier = fields[0].strip()
            if identifier in predictions:
                raise ValueError(f"{where}: identifier {identifier} is predicted twice")
            predictions[identifier] = _parse_bool(fields[1], where)
    return predictions


def load_grounding_predictions(path) -> dict:
    """``{(image_id, caption_index, phrase_index): float [M, 4] boxes best first}`` from Flickr30K/run_predict.py's file."""
    records = _read_json(path, "a JSON list of ranked boxes per phrase (Flickr30K/run_predict.py)")
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of phrases, found {type(records).__name__}")
    out = {}
    for i, record in enumerate(records):
        where = f"{path}: item {i}"
        if not isinstance(record, dict) or not all(k in record for k in ("image_id", "caption_index", "phrase_index", "boxes")):
            raise ValueError(f"{where}: expected an object with image_id, caption_index, phrase_index and boxes")
        key = (str(record["image_id"]), integer_id(record["caption_index"], where, "caption_index"),
               integer_id(record["phrase_index"], where, "phrase_index"))
        try:
            boxes = np.asarray(record["boxes"], dtype=np.float64)
        except (TypeError, ValueError):
            boxes = None
        if boxes is None or (boxes.size and (boxes.ndim != 2 or boxes.shape[1] != 4)) or not np.isfinite(boxes).all():
            raise ValueError(f"{where}: boxes must be a list of [x1, y1, x2, y2] numbers")
        boxes = boxes.reshape(-1, 4)
        if key in out:
            raise ValueError(f"{where}: image {key[0]} caption {key[1]} phrase {key[2]} appears twice")
        out[key] = boxes
    return out
