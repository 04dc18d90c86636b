"""Judge zero-shot video-QA answers with an LLM, the Video-ChatGPT way Video-LLaVA scores them (PruMerge Table 3).

Usage::

    export OPENAI_API_KEY=...
    python -m llava.eval.video_qa_judge --dataset msvd \\
        --pred-file playground/data/eval/MSVD_Zero_Shot_QA/answers/llava-video-7b/merge.jsonl \\
        --output-dir playground/data/eval/MSVD_Zero_Shot_QA/answers/llava-video-7b/judge \\
        [--base-url https://api.openai.com/v1] [--model gpt-3.5-turbo] [--api-key-env OPENAI_API_KEY] \\
        [--workers 8] [--retries 10] [--timeout 60]

The prediction file holds one JSON object per line, ``{"id", "question", "answer", "pred", ...}``, the keys
``llava.eval.model_video_qa`` writes (upstream's keys; see docs/VideoQA.md); ids must be unique.
Every item is one chat-completions request to ``POST {base_url}/chat/completions`` with the body
``{"model", "messages"}`` (``temperature`` / ``seed`` / ``max_tokens`` only when given) and the two
messages of upstream ``eval_video_qa.py`` (:data:`SYSTEM_PROMPT`, :func:`user_prompt`; §5.3). Any
OpenAI-compatible server works (``vllm serve``, a local stub); only the standard library is used.

Replies. ``choices[0].message.content`` is read with ``ast.literal_eval`` and must give a dict (upstream
expects ``{'pred': 'yes'|'no', 'score': int}``). A connection error, a timeout, HTTP 429 or 5xx, or a reply
that is not a dict literal is retried up to ``--retries`` times with exponential backoff; another HTTP 4xx
is not retried. An item still unanswered is listed as failed (never dropped silently): the run then exits
with status 1 unless ``--allow-failures``, and a rerun asks only the failed items. ``--lenient-parse``
(off by default, recorded in the scores) accepts the first ``{...}`` in a chattier reply.

Resume. Each judged item is written at once, atomically, to ``<output dir>/<id>.json`` as upstream's
``[reply dict, {"q", "a", "pred"}]`` plus a third element ``{"judge_model", "attempts"}`` (the ``model``
the server reported, and how many requests the item took). An interrupted run resumes where it stopped:
items with a file are never asked again. A file whose question / answer / prediction differ from the
prediction file's (a re-generated answers file judged into an old folder) stops the run. All judged
items are also written to ``<output dir>/results.json`` as upstream's ``{id: [reply dict, qa]}``.

Scores (upstream's rules, :func:`compute_metrics`): over the judged items, in one try-block per item:
``count += 1``; ``score_sum += int(d["score"])`` (a float score is truncated, 4.8 -> 4, as upstream's
``int``; a string such as ``"4.8"`` raises, so the item adds 0 to the sum, stays in ``count`` and leaves
accuracy); then ``"yes" in d["pred"].lower()`` -> yes, elif ``"no" in ...`` -> no. Accuracy = yes / (yes +
no); average score = score_sum / count. They are written beside the prediction file as ``<stem>.scores.json``
(headline ``accuracy_percent``) with the counts (judged, failed, yes, no), the requested judge model, the
models the server reported and the base URL. See docs/VideoQA.md.
"""

from __future__ import annotations

import argparse
import ast
import http.client
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava.eval.eval_video_qa import BENCHMARKS
from llava.eval.io import iter_numbered_jsonl, read_json, write_json, write_scores

# The two messages of upstream eval_video_qa.py (docs/VideoQA.md), character for character:
# note "task:------##INSTRUCTIONS: ", the double space in "is  a string" and "STRING.DO NOT".
SYSTEM_PROMPT = (
    "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for "
    "question-answer pairs. Your task is to compare the predicted answer with the correct answer and "
    "determine if they match meaningfully. Here's how you can accomplish the task:------##INSTRUCTIONS: "
    "- Focus on the meaningful match between the predicted answer and the correct answer.\n"
    "- Consider synonyms or paraphrases as valid matches.\n"
    "- Evaluate the correctness of the prediction compared to the answer."
)
USER_PROMPT_TAIL = (
    "Provide your evaluation only as a yes/no and score where the score is an integer value between 0 and 5, "
    "with 5 indicating the highest meaningful match. Please generate the response in the form of a Python "
    "dictionary string with keys 'pred' and 'score', where value of 'pred' is  a string of 'yes' or 'no' and "
    "value of 'score' is in INTEGER, not STRING.DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only "
    "provide the Python dictionary string. For example, your response should look like this: "
    "{'pred': 'yes', 'score': 4.8}."
)
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-3.5-turbo"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
RESULTS_FILE = "results.json"
MAX_BACKOFF_S = 60.0
EXIT_FAILURES = 1


def user_prompt(question: str, answer: str, pred: str) -> str:
    """The user message for one QA pair (upstream's text; the three values are inserted unchanged)."""
    return (
        "Please evaluate the following video-based question-answer pair:\n\n"
        f"Question: {question}\nCorrect Answer: {answer}\nPredicted Answer: {pred}\n\n" + USER_PROMPT_TAIL
    )


def build_messages(question: str, answer: str, pred: str) -> list[dict[str, str]]:
    """The ``messages`` of one judge request: the system prompt, then the user prompt."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_prompt(question, answer, pred)},
    ]


# ---------------------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class Prediction:
    """One answered question of the prediction file."""

    id: str
    question: str
    answer: str
    pred: str

    def qa(self) -> dict[str, str]:
        """Upstream's second element of a stored item: ``{"q", "a", "pred"}``."""
        return {"q": self.question, "a": self.answer, "pred": self.pred}


_UNSAFE_ID = re.compile(r"[/\\\x00]|^\.")


def load_predictions(path: str | Path) -> list[Prediction]:
    """The prediction file's items, in file order.

    Raises:
        ValueError: a line lacks ``id`` / ``question`` / ``answer`` / ``pred``, an id is repeated (items are
            stored by id), or an id cannot name an item file (empty, a path separator, a leading dot, ``results``).
    """
    predictions: list[Prediction] = []
    where: dict[str, int] = {}
    for line_number, record in iter_numbered_jsonl(path):
        missing = [key for key in ("id", "question", "answer", "pred") if key not in record]
        if missing:
            raise ValueError(f"{path}:{line_number}: missing {missing} (expected id, question, answer, pred)")
        item_id = str(record["id"])
        if not item_id or _UNSAFE_ID.search(item_id) or item_id == Path(RESULTS_FILE).stem:
            raise ValueError(f"{path}:{line_number}: id {item_id!r} cannot name a result file")
        if item_id in where:
            raise ValueError(f"{path}:{line_number}: id {item_id!r} repeats line {where[item_id]}")
        where[item_id] = line_number
        predictions.append(
            Prediction(item_id, str(record["question"]), str(record["answer"]), str(record["pred"]))
        )
    return predictions


# ---------------------------------------------------------------------------------------- the client


@dataclass(frozen=True)
class JudgeConfig:
    """How to reach the judge and how hard to try.

    Attributes:
        base_url: the API root; requests go to ``{base_url}/chat/completions``.
        model: the judge model requested.
        api_key: sent as ``Authorization: Bearer``; None sends no header.
        timeout: seconds per request.
        retries: further tries after the first, for retryable errors and garbled replies.
        backoff: seconds before the first retry, doubled before each next one (at most 60 s).
        temperature, seed, max_tokens: sent only when not None (upstream sets none of them).
        lenient_parse: accept the first ``{...}`` of a reply that is not a dict literal as a whole.
    """

    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    api_key: str | None = None
    timeout: float = 60.0
    retries: int = 10
    backoff: float = 1.0
    temperature: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    lenient_parse: bool = False

    def __post_init__(self) -> None:
        if self.retries < 0 or self.timeout <= 0 or self.backoff < 0:
            raise ValueError(f"need retries >= 0, timeout > 0, backoff >= 0; got {self}")

    def backoff_before(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        return min(self.backoff * 2 ** (retry - 1), MAX_BACKOFF_S)


class RetryableError(Exception):
    """A failure worth another try: connection error, timeout, HTTP 429 / 5xx, a garbled reply."""

    def __init__(self, message: str, wait_s: float = 0.0) -> None:
        super().__init__(message)
        self.wait_s = wait_s  # a server's Retry-After, when it gave one


class FatalError(Exception):
    """A failure that another try would repeat: an HTTP 4xx other than 429 (bad key, unknown model)."""


def request_body(config: JudgeConfig, messages: list[dict[str, str]]) -> dict[str, Any]:
    """The chat-completions body: model and messages, plus the sampling fields that were given."""
    body: dict[str, Any] = {"model": config.model, "messages": messages}
    for key in ("temperature", "seed", "max_tokens"):
        if getattr(config, key) is not None:
            body[key] = getattr(config, key)
    return body


def _retry_after(err: urllib.error.HTTPError) -> float:
    try:
        return float(err.headers.get("Retry-After", 0))
    except (TypeError, ValueError):
        return 0.0


def post_chat_completion(config: JudgeConfig, messages: list[dict[str, str]]) -> dict[str, Any]:
    """One request; the decoded response JSON.

    Raises:
        RetryableError: connection error, timeout, HTTP 429 or 5xx, a response that is not JSON.
        FatalError: any other HTTP error.
    """
    headers = {"Content-Type": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    data = json.dumps(request_body(config, messages)).encode("utf-8")
    url = config.base_url.rstrip("/") + "/chat/completions"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=config.timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        detail = err.read()[:200].decode("utf-8", "replace")
        if err.code == 429 or err.code >= 500:
            raise RetryableError(f"HTTP {err.code}: {detail}", _retry_after(err)) from err
        raise FatalError(f"HTTP {err.code}: {detail}") from err
    except (OSError, http.client.HTTPException) as err:  # refused, reset, timed out, cut short
        raise RetryableError(f"{type(err).__name__}: {err}") from err
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise RetryableError(f"response is not JSON: {raw[:200]!r}") from err


_FIRST_BRACES = re.compile(r"\{.*?\}", re.DOTALL)


def parse_reply(content: str, lenient: bool = False) -> dict[str, Any]:
    """The judge's reply as a dict: ``ast.literal_eval`` of the whole text (upstream), or with ``lenient``
    of its first ``{...}`` when the whole text is not one.

    Raises:
        RetryableError: no dict literal (a garbled reply).
    """
    candidates = [content]
    if lenient:
        candidates += _FIRST_BRACES.findall(content)[:1]
    for text in candidates:
        try:
            parsed = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(parsed, dict):
            return parsed
    raise RetryableError(f"garbled reply (not a dict literal): {content[:200]!r}")


def reply_content(response: dict[str, Any]) -> tuple[str, str | None]:
    """``(choices[0].message.content, the reported model)`` of a response.

    Raises:
        RetryableError: the response has no message content.
    """
    try:
        content = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as err:
        raise RetryableError(f"response without choices[0].message.content: {str(response)[:200]}") from err
    if not isinstance(content, str):
        raise RetryableError(f"message content is {type(content).__name__}, not text")
    return content, response.get("model")


@dataclass(frozen=True)
class Judgement:
    """The judge's answer for one item, or why there is none."""

    item: Prediction
    reply: dict[str, Any] | None
    judge_model: str | None
    attempts: int
    error: str | None = None


def judge_item(
    config: JudgeConfig, item: Prediction, sleep: Callable[[float], None] = time.sleep
) -> Judgement:
    """Asks the judge about ``item``, retrying retryable failures with exponential backoff."""
    messages = build_messages(item.question, item.answer, item.pred)
    error, wait_s = "", 0.0
    for attempt in range(1, config.retries + 2):
        if attempt > 1:
            sleep(max(config.backoff_before(attempt - 1), wait_s))
        try:
            content, model = reply_content(post_chat_completion(config, messages))
            return Judgement(item, parse_reply(content, config.lenient_parse), model, attempt)
        except RetryableError as err:
            error, wait_s = str(err), min(err.wait_s, MAX_BACKOFF_S)
        except FatalError as err:
            return Judgement(item, None, None, attempt, f"not retried: {err}")
    return Judgement(
        item, None, None, config.retries + 1, f"gave up after {config.retries + 1} tries: {error}"
    )


# ---------------------------------------------------------------------------------------- stored items


def item_path(output_dir: Path, item_id: str) -> Path:
    return output_dir / f"{item_id}.json"


def write_atomic(path: Path, data: Any) -> None:
    """Writes ``data`` as JSON through a temporary file and a rename, so that a killed run leaves either
    the whole file or none."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write_json(tmp, data, indent=None)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def stored_item(judgement: Judgement) -> list:
    """What an item's file holds: upstream's ``[reply, qa]`` and ``{"judge_model", "attempts"}``."""
    meta = {"judge_model": judgement.judge_model, "attempts": judgement.attempts}
    return [judgement.reply, judgement.item.qa(), meta]


def load_judged(output_dir: Path, predictions: Iterable[Prediction]) -> dict[str, list]:
    """``{id: stored item}`` for the predictions already judged into ``output_dir``.

    Raises:
        ValueError: a stored item's question, answer or prediction differ from the prediction file's.
    """
    judged, stale = {}, []
    for item in predictions:
        path = item_path(output_dir, item.id)
        if path.is_file():
            judged[item.id] = read_json(path)
            if judged[item.id][1] != item.qa():
                stale.append(item.id)
    if stale:
        raise ValueError(
            f"{output_dir}: {len(stale)} stored judgements are of other answers than the prediction file's "
            f"(e.g. {stale[:3]}); judge into a new --output-dir"
        )
    return judged


# ---------------------------------------------------------------------------------------- judging


def judge_and_store(config: JudgeConfig, item: Prediction, output_dir: Path) -> tuple[Judgement, list | None]:
    """Judges ``item`` and, when answered, writes its file at once (in the worker, so that a request still
    in flight when the run is interrupted is not lost); returns the judgement and what was stored."""
    judgement = judge_item(config, item)
    if judgement.reply is None:
        return judgement, None
    stored = stored_item(judgement)
    write_atomic(item_path(output_dir, item.id), stored)
    return judgement, stored


def judge_all(
    predictions: list[Prediction],
    output_dir: Path,
    config: JudgeConfig,
    workers: int = 8,
    progress: bool | None = None,
) -> tuple[dict[str, list], list[Judgement]]:
    """Judges every prediction that ``output_dir`` has no file for, ``workers`` requests at a time.

    Returns ``{id: stored item}`` for every judged item (earlier runs' included) in prediction-file order,
    and the failures. ``progress``: show a tqdm bar (None: only on a terminal).
    """
    from tqdm import tqdm

    output_dir.mkdir(parents=True, exist_ok=True)
    judged = load_judged(output_dir, predictions)
    pending = [item for item in predictions if item.id not in judged]
    failures: list[Judgement] = []
    disable = None if progress is None else not progress
    bar = tqdm(total=len(predictions), initial=len(judged), unit="item", desc="judge", disable=disable)
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    futures: set[Future] = {pool.submit(judge_and_store, config, item, output_dir) for item in pending}
    try:
        while futures:
            done, futures = wait(futures, return_when=FIRST_COMPLETED)
            for future in done:
                judgement, stored = future.result()
                if stored is None:
                    failures.append(judgement)
                else:
                    judged[judgement.item.id] = stored
                bar.update(1)
                bar.set_postfix(failed=len(failures), refresh=False)
    finally:
        # On an interrupt: nothing new starts; requests in flight finish and store their items.
        pool.shutdown(wait=not futures, cancel_futures=True)
        bar.close()
    order = {item.id: i for i, item in enumerate(predictions)}
    failures.sort(key=lambda j: order[j.item.id])
    return {item.id: judged[item.id] for item in predictions if item.id in judged}, failures


def compute_metrics(replies: Iterable[Any]) -> dict[str, Any]:
    """Upstream's figures over the judges' reply dicts (one per judged item).

    Per item, in one try-block and in this order: ``count += 1``; ``score_sum += int(d["score"])``;
    ``p = d["pred"].lower()``; yes if ``"yes" in p``, elif no if ``"no" in p``. An exception ends the item's
    block: a score ``int`` cannot read (``"4.8"``, missing) adds 0 and keeps the item out of accuracy.
    ``accuracy`` = yes / (yes + no), ``average_score`` = score_sum / count (None when undefined).
    """
    count = score_sum = yes = no = score_errors = 0
    for d in replies:
        count += 1
        try:
            score_sum += int(d["score"])
        except Exception:  # upstream's try-block: any failure ends this item's block
            score_errors += 1
            continue
        try:
            p = d["pred"].lower()
        except Exception:
            continue
        if "yes" in p:
            yes += 1
        elif "no" in p:
            no += 1
    accuracy = yes / (yes + no) if yes + no else None
    return {
        "accuracy_percent": None if accuracy is None else 100 * accuracy,
        "accuracy": accuracy,
        "average_score": score_sum / count if count else None,
        "count": count,
        "yes": yes,
        "no": no,
        "neither": count - yes - no,
        "score_sum": score_sum,
        "score_errors": score_errors,
    }


def summarise(
    dataset: str, judged: dict[str, list], failures: list[Judgement], config: JudgeConfig
) -> dict[str, Any]:
    """The scores file's content: the metrics, the item counts and which judge gave them."""
    metrics = compute_metrics(stored[0] for stored in judged.values())
    reported = Counter(str(stored[2].get("judge_model")) for stored in judged.values() if len(stored) > 2)
    return BENCHMARKS[dataset].stamp(
        {
            **metrics,
            "judged": len(judged),
            "failed": len(failures),
            "failed_ids": [j.item.id for j in failures],
            "judge": {
                "base_url": config.base_url,
                "model_requested": config.model,
                "models_reported": dict(sorted(reported.items())),
                "temperature": config.temperature,
                "seed": config.seed,
                "max_tokens": config.max_tokens,
                "lenient_parse": config.lenient_parse,
            },
        }
    )


def print_scores(scores: dict[str, Any]) -> None:
    accuracy, score = scores["accuracy_percent"], scores["average_score"]
    print(f"{scores['benchmark']}: judged {scores['judged']}, failed {scores['failed']}")
    print(f"yes {scores['yes']}, no {scores['no']}, neither {scores['neither']}")
    print("accuracy: " + ("-" if accuracy is None else f"{accuracy:.1f}"))
    print("average score: " + ("-" if score is None else f"{score:.1f}"))
    print(f"judge: {scores['judge']['model_requested']} (reported {scores['judge']['models_reported']})")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llava.eval.video_qa_judge", description=__doc__.split("\n")[0]
    )
    p.add_argument("--dataset", required=True, choices=sorted(BENCHMARKS), help="which declaration scores it")
    p.add_argument("--pred-file", required=True, help="JSONL with id, question, answer, pred per line")
    p.add_argument("--output-dir", required=True, help="one <id>.json per judged item, and results.json")
    p.add_argument("--base-url", "--judge-base-url", default=DEFAULT_BASE_URL, help="OpenAI-compatible root")
    p.add_argument("--model", "--judge-model", default=DEFAULT_MODEL, help="judge model requested")
    p.add_argument(
        "--api-key-env",
        "--judge-api-key-env",
        default=DEFAULT_API_KEY_ENV,
        help="environment variable holding the API key (unset or empty: no Authorization header)",
    )
    p.add_argument("--workers", "--judge-workers", type=int, default=8, help="requests in flight")
    p.add_argument("--retries", "--judge-max-retries", type=int, default=10, help="tries after the first")
    p.add_argument("--timeout", "--judge-timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--backoff", type=float, default=1.0, help="seconds before the first retry, doubled after")
    p.add_argument("--temperature", "--judge-temperature", type=float, default=None, help="sent if given")
    p.add_argument("--seed", type=int, default=None, help="sent if given")
    p.add_argument("--max-tokens", type=int, default=None, help="sent if given")
    p.add_argument("--lenient-parse", action="store_true", help="accept the first {...} of a chatty reply")
    p.add_argument("--allow-failures", action="store_true", help="exit 0 even if some items stay unjudged")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (1: some items failed)."""
    args = parser().parse_args(argv)
    config = JudgeConfig(
        base_url=args.base_url,
        model=args.model,
        api_key=os.environ.get(args.api_key_env) or None,
        timeout=args.timeout,
        retries=args.retries,
        backoff=args.backoff,
        temperature=args.temperature,
        seed=args.seed,
        max_tokens=args.max_tokens,
        lenient_parse=args.lenient_parse,
    )
    output_dir = Path(args.output_dir)
    predictions = load_predictions(args.pred_file)
    judged, failures = judge_all(
        predictions, output_dir, config, args.workers, progress=False if args.no_progress else None
    )
    write_json(output_dir / RESULTS_FILE, {item_id: stored[:2] for item_id, stored in judged.items()})
    scores = summarise(args.dataset, judged, failures, config)
    print_scores(scores)
    print(f"scores written to {write_scores(args.pred_file, scores)}")
    for judgement in failures:
        print(f"failed: {judgement.item.id}: {judgement.error}", file=sys.stderr)
    if failures and not args.allow_failures:
        print(f"{len(failures)} items were not judged; rerun to ask only those", file=sys.stderr)
        return EXIT_FAILURES
    return 0


if __name__ == "__main__":
    sys.exit(main())
