"""Task metrics, computed exactly as the official scorers compute them.

VQA accuracy follows GT-Vision-Lab/VQA ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` (the
current master, which the leaderboard numbers in papers come from); NLVR2 follows lil-lab/nlvr
``nlvr2/eval/metrics.py``. Where the official code has a quirk that changes scores, it is mirrored
on purpose and said so next to the code, because a metric that is "more correct" than the
leaderboard's is not comparable with it.
"""
import re

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


def normalize_vqa_answer(text: str) -> str:
    """Normalise an answer string exactly as vqaEval.py normalises a predicted answer.

    Newlines and tabs become spaces, the ends are stripped, punctuation and periods are handled
    as in ``_strip_punctuation``, then words are lowercased, number words become digits, the
    articles a/an/the are dropped and apostrophe-less contractions get their apostrophe back.
    """
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles_contractions(_strip_punctuation(text))


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
