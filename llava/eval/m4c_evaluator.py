"""EvalAI answer normalisation and TextVQA soft accuracy, matching the official VQA/EvalAI scorer.

:class:`EvalAIAnswerProcessor` reproduces the normaliser used by the VQAv2 EvalAI server and by
LLaVA's TextVQA scorer *including its quirks* (docs/Evaluation.md lists them), because the published numbers were
computed with them:

* punctuation marks are deleted or replaced by a space depending on the *input* text, not on the
  text as it is being rewritten;
* the period regex ``(?!<=\\d)(\\.)(?!\\d)`` was meant to have a look-behind but its ``(?!<=\\d)`` is a
  look-ahead that never fails, so every ``.`` not followed by a digit is deleted, also after a digit
  (``"1."`` → ``"1"``, ``"3.5"`` stays);
* ``re.UNICODE`` (= 32) was passed where ``re.sub`` expects ``count``, so at most 32 periods go.

:class:`TextVQAAccuracyEvaluator` computes the VQA soft accuracy: every unique normalised ground
truth answer scores the mean, over the leave-one-out subsets of the ground-truth answers (10 for
TextVQA), of ``min(1, matches / 3)``; a prediction gets the score of its normalised answer
(0 if no annotator gave it), and the evaluator returns the mean over questions (a fraction; the
command-line scorers report it ×100).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

# Contractions as they are written with their apostrophes. The lookup keys are derived from them
# in _contraction_keys: a word with one apostrophe is matched without it ("dont"), a word with
# several apostrophes is matched with exactly one of them missing ("couldnt've", "couldn'tve").
_CONTRACTIONS = (
    "ain't aren't can't could've couldn't didn't doesn't don't hadn't hasn't haven't he'd he's "
    "how'd how'll how's isn't it'd it'll ma'am mightn't might've mustn't must've needn't not've "
    "o'clock oughtn't shan't should've shouldn't somebody'll somebody's someone'd someone'll "
    "someone's something'd something'll that's there'd there're there's they'd they'll they're "
    "they've 'twas wasn't we've weren't what'll what're what's what've when's where'd where's "
    "where've who'd who'll who's who've why'll why're why's won't would've wouldn't y'all you'd "
    "you'll you're you've "
    "couldn't've hadn't've he'd've it'd've mightn't've she'd've shouldn't've somebody'd've "
    "someone'd've something'd've there'd've they'd've we'd've who'd've wouldn't've you'd've "
    "y'all'll y'all'd've 'ow's'at"
).split()

# The standard VQA table also maps "somebody'd" to "somebodyd" (the reverse of every other entry);
# kept for identical scores. Its entries whose keys hold capitals ("Im", "Ive", "Id've", ...) can
# never match because the text is lower-cased first, and entries mapping a word to itself change
# nothing, so both are left out.
_REVERSED_ENTRIES = {"somebody'd": "somebodyd"}


def _contraction_keys(word: str) -> list[str]:
    """The apostrophe-less spellings of ``word`` that the normaliser rewrites into ``word``."""
    positions = [i for i, char in enumerate(word) if char == "'"]
    if len(positions) == 1:
        return [word.replace("'", "")]
    return [word[:i] + word[i + 1 :] for i in positions]


def build_contractions() -> dict[str, str]:
    """The contraction table: apostrophe-less spelling → spelling with apostrophes."""
    table = {key: word for word in _CONTRACTIONS for key in _contraction_keys(word)}
    table.update(_REVERSED_ENTRIES)
    return table


class EvalAIAnswerProcessor:
    """Normalise a free-form answer exactly as the VQA / EvalAI evaluation does (quirks included)."""

    CONTRACTIONS: dict[str, str] = build_contractions()
    NUMBER_MAP: dict[str, str] = {
        "none": "0",
        "zero": "0",
        "one": "1",
        "two": "2",
        "three": "3",
        "four": "4",
        "five": "5",
        "six": "6",
        "seven": "7",
        "eight": "8",
        "nine": "9",
        "ten": "10",
    }
    ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})
    PUNCTUATIONS: tuple[str, ...] = tuple(';/[]"{}()=+\\_-><@`,?!')
    # Written as in the reference scorer: "(?!<=\d)" is a (never failing) look-ahead, not a look-behind.
    PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
    COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
    # The reference passes re.UNICODE positionally to .sub(), where it is the replacement count.
    PERIOD_STRIP_COUNT = int(re.UNICODE)

    def __call__(self, answer: str) -> str:
        """Return the normalised form of ``answer``."""
        text = self.word_tokenize(answer)
        text = text.replace("\n", " ").replace("\t", " ").strip()
        text = self.process_punctuation(text)
        return self.process_digit_article(text)

    @staticmethod
    def word_tokenize(text: str) -> str:
        """Lower-case, delete ``,`` and ``?``, split off ``'s`` as its own word, strip."""
        return text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()

    def process_punctuation(self, in_text: str) -> str:
        """Delete or blank out punctuation marks, then apply the (quirky) period stripping.

        A mark is deleted when the *input* text has it next to a space (or has a digit-comma-digit
        group); otherwise every occurrence becomes a space.
        """
        out_text = in_text
        has_digit_comma = self.COMMA_STRIP.search(in_text) is not None
        for mark in self.PUNCTUATIONS:
            if mark + " " in in_text or " " + mark in in_text or has_digit_comma:
                out_text = out_text.replace(mark, "")
            else:
                out_text = out_text.replace(mark, " ")
        return self.PERIOD_STRIP.sub("", out_text, count=self.PERIOD_STRIP_COUNT)

    def process_digit_article(self, in_text: str) -> str:
        """Map number words to digits, drop articles, restore contractions, join with single spaces."""
        words = []
        for word in in_text.lower().split():
            word = self.NUMBER_MAP.get(word, word)
            if word not in self.ARTICLES:
                words.append(self.CONTRACTIONS.get(word, word))
        return " ".join(words)


class TextVQAAccuracyEvaluator:
    """VQA soft accuracy over a list of ``{"pred_answer": str, "gt_answers": [str, ...]}`` entries."""

    def __init__(self, answer_processor: EvalAIAnswerProcessor | None = None) -> None:
        self.answer_processor = answer_processor or EvalAIAnswerProcessor()

    def compute_answer_scores(self, raw_answers: Sequence[str]) -> dict[str, float]:
        """Score every unique normalised ground-truth answer by leave-one-out soft accuracy.

        For each way of leaving one of the ``n`` annotators out, an answer scores
        ``min(1, matches among the other n - 1 / 3)``; its score is the mean over the ``n`` ways.
        """
        if not raw_answers:
            raise ValueError("a question needs at least one ground-truth answer")
        answers = [self.answer_processor(answer) for answer in raw_answers]
        scores = {}
        for candidate in set(answers):
            subset_scores = []
            for left_out in range(len(answers)):
                matches = sum(1 for i, answer in enumerate(answers) if i != left_out and answer == candidate)
                subset_scores.append(min(1.0, matches / 3))
            scores[candidate] = sum(subset_scores) / len(subset_scores)
        return scores

    def score_prediction(self, pred_answer: str, gt_answers: Sequence[str]) -> float:
        """Soft accuracy (0–1) of one prediction against its ground-truth answers."""
        return self.compute_answer_scores(gt_answers).get(self.answer_processor(pred_answer), 0.0)

    def eval_pred_list(self, pred_list: Iterable[Mapping[str, object]]) -> float:
        """Mean soft accuracy (a fraction, 0–1) over ``pred_list``."""
        scores = [self.score_prediction(entry["pred_answer"], entry["gt_answers"]) for entry in pred_list]
        if not scores:
            raise ValueError("no predictions to evaluate")
        return sum(scores) / len(scores)
