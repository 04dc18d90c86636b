"""Tests of the video-QA judge (``llava.eval.video_qa_judge``) against the local stub server.

The prompts are checked against the lengths and SHA-256 digests that spec video_prumerge §5.3 lists for
upstream's ``eval_video_qa.py`` messages; the scoring rules against hand-computed figures; the client,
resume and fault handling against ``judge_server.JudgeServer`` on 127.0.0.1 (no network).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from judge_server import GARBLED, JudgeServer
from tests_support import REPO_ROOT

from llava.eval import benchmarks
from llava.eval import video_qa_judge as vqj
from llava.eval.io import read_json, scores_path


@pytest.fixture(autouse=True)
def no_real_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key in the environment must never reach a test server (and the header tests need it unset)."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def items(n: int) -> list[dict]:
    """``n`` predictions; even ones contain their answer (the stub says yes), odd ones do not."""
    answers = ["dance", "cook", "swim", "run", "sing", "drive"]
    out = []
    for i in range(n):
        answer = answers[i % len(answers)]
        pred = f"The man is {answer}ing." if i % 2 == 0 else "The man is sleeping."
        out.append(
            {"id": f"v_clip{i}_{i}", "question": f"what does person {i} do?", "answer": answer, "pred": pred}
        )
    return out


def write_preds(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def judge_argv(server: JudgeServer, pred_file: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--dataset",
        "msvd",
        "--pred-file",
        str(pred_file),
        "--output-dir",
        str(out),
        "--base-url",
        server.base_url,
        "--backoff",
        "0",
        "--timeout",
        "10",
        "--no-progress",
        *extra,
    ]


def asked_questions(server: JudgeServer) -> list[str]:
    """The ``Question:`` line of every request the server received."""
    return [p.split("Question: ", 1)[1].split("\n", 1)[0] for p in server.user_prompts()]


# ------------------------------------------------------------------------------------------- prompts

SPEC_SYSTEM = (498, "12b9e42d120081bf1e7f1999bb09db2db250add544abd3c183d61a2f938c6510")
SPEC_USER = (687, "3d8a842e4ef14b912876645ad006450a0fb118d888f4fe9b580a60acf29f111c")


def digest(text: str) -> tuple[int, str]:
    return len(text), hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_prompts_are_upstreams_byte_for_byte() -> None:
    """Spec §5.3's checks: the system prompt, and the user prompt of its example QA pair."""
    assert digest(vqj.SYSTEM_PROMPT) == SPEC_SYSTEM
    user = vqj.user_prompt("what is the man doing?", "dance", "The man is dancing.")
    assert digest(user) == SPEC_USER
    assert "task:------##INSTRUCTIONS: " in vqj.SYSTEM_PROMPT
    assert "is  a string" in user and "STRING.DO NOT" in user
    messages = vqj.build_messages("what is the man doing?", "dance", "The man is dancing.")
    assert messages == [{"role": "system", "content": vqj.SYSTEM_PROMPT}, {"role": "user", "content": user}]


def test_request_body_is_model_and_messages_only_and_key_header(tmp_path: Path, monkeypatch) -> None:
    """Upstream sets no temperature: the body is exactly model + messages unless a flag asks for more;
    the key comes from the named environment variable, and no header is sent without one."""
    record = items(1)[0]
    pred_file = write_preds(tmp_path / "merge.jsonl", [record])
    with JudgeServer() as server:
        assert vqj.main(judge_argv(server, pred_file, tmp_path / "a")) == 0
        body = server.requests[0]["body"]
        assert body == {
            "model": "gpt-3.5-turbo",
            "messages": vqj.build_messages(record["question"], record["answer"], record["pred"]),
        }
        assert server.requests[0]["authorization"] is None
        extra = ["--temperature", "0", "--seed", "3", "--max-tokens", "20", "--model", "judge-x"]
        assert vqj.main(judge_argv(server, pred_file, tmp_path / "b", *extra)) == 0
        body = server.requests[1]["body"]
        assert (body["model"], body["temperature"], body["seed"], body["max_tokens"]) == (
            "judge-x",
            0.0,
            3,
            20,
        )
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-test")
    with JudgeServer(api_key="sk-test") as server:
        argv = judge_argv(server, pred_file, tmp_path / "c", "--api-key-env", "MY_JUDGE_KEY")
        assert vqj.main(argv) == 0
        assert [r["authorization"] for r in server.requests] == ["Bearer sk-test"]


# ------------------------------------------------------------------------------------------- scoring


@pytest.mark.parametrize(
    ("replies", "expected"),
    [
        pytest.param([{"pred": "yes", "score": 5}] * 3, (100.0, 5.0, 3, 3, 0), id="all-yes"),
        pytest.param([{"pred": "no", "score": 1}] * 2, (0.0, 1.0, 2, 0, 2), id="all-no"),
        pytest.param([], (None, None, 0, 0, 0), id="none-judged"),
        # int() truncates a float score: 4.8 -> 4, 0.6 -> 0.
        pytest.param(
            [{"pred": "yes", "score": 4.8}, {"pred": "no", "score": 0.6}], (50.0, 2.0, 2, 1, 1), id="float"
        ),
        # "4" reads as 4; "4.8" raises in int(): 0 to the sum, kept in count, out of accuracy.
        pytest.param(
            [{"pred": "yes", "score": "4"}, {"pred": "no", "score": "4.8"}], (100.0, 2.0, 2, 1, 0), id="str"
        ),
        pytest.param([{"pred": "yes", "score": "4.8"}], (None, 0.0, 1, 0, 0), id="only-str-float"),
        # Case-insensitive substring tests, yes first: "not sure" counts as no, "maybe" and "" as neither.
        pytest.param(
            [
                {"pred": "Yes", "score": 3},
                {"pred": "NO.", "score": 1},
                {"pred": "not sure", "score": 2},
                {"pred": "maybe", "score": 2},
                {"pred": "", "score": 2},
                {"pred": "yes and no", "score": 4},
            ],
            (50.0, 14 / 6, 6, 2, 2),
            id="pred-text",
        ),
        # A reply without "pred" keeps its score; one without "score" adds nothing and leaves accuracy.
        pytest.param(
            [{"score": 3}, {"pred": "yes"}, {"pred": "no", "score": 2}], (0.0, 5 / 3, 3, 0, 1), id="missing"
        ),
    ],
)
def test_metrics_follow_upstreams_rules(replies: list[dict], expected: tuple) -> None:
    metrics = vqj.compute_metrics(replies)
    got = (
        metrics["accuracy_percent"],
        metrics["average_score"],
        metrics["count"],
        metrics["yes"],
        metrics["no"],
    )
    assert got == pytest.approx(expected)
    assert metrics["neither"] == metrics["count"] - metrics["yes"] - metrics["no"]


def test_parse_reply_strict_and_lenient() -> None:
    assert vqj.parse_reply("{'pred': 'yes', 'score': 4.8}") == {"pred": "yes", "score": 4.8}
    assert vqj.parse_reply(' {"pred": "no", "score": 0}\n') == {"pred": "no", "score": 0}
    chatty = "Here you go: {'pred': 'no', 'score': 1} Hope it helps."
    for garbled in (GARBLED, "[1, 2]", "'yes'", "", chatty):
        with pytest.raises(vqj.RetryableError, match="garbled"):
            vqj.parse_reply(garbled)
    assert vqj.parse_reply(chatty, lenient=True) == {"pred": "no", "score": 1}
    with pytest.raises(vqj.RetryableError):
        vqj.parse_reply(GARBLED, lenient=True)


def test_prediction_file_checks(tmp_path: Path) -> None:
    good = items(2)
    assert [p.id for p in vqj.load_predictions(write_preds(tmp_path / "ok.jsonl", good))] == [
        g["id"] for g in good
    ]
    bad = {
        "repeats line 1": [good[0], good[0]],
        "missing \\['pred'\\]": [{k: v for k, v in good[0].items() if k != "pred"}],
        "cannot name": [{**good[0], "id": "../x"}],
    }
    for message, records in bad.items():
        with pytest.raises(ValueError, match=message):
            vqj.load_predictions(write_preds(tmp_path / "bad.jsonl", records))
    with pytest.raises(ValueError, match="cannot name"):
        vqj.load_predictions(write_preds(tmp_path / "bad.jsonl", [{**good[0], "id": "results"}]))


# ------------------------------------------------------------------------------------------- faults


def test_end_to_end_with_faults(tmp_path: Path) -> None:
    """Concurrent workers against a server that fails every 4th call, garbles every 5th and gives float
    scores: every item is judged, stored per id and in results.json, and scored by upstream's rules."""
    records = items(12)
    pred_file = write_preds(tmp_path / "msvd" / "merge.jsonl", records)
    out = tmp_path / "msvd" / "judge"
    with JudgeServer(fail_every=4, garble_every=5, float_scores=True, delay=0.01) as server:
        assert vqj.main(judge_argv(server, pred_file, out, "--workers", "4")) == 0
        calls, base_url = len(server.requests), server.base_url
    assert calls > len(records)  # faults were injected and retried
    results = read_json(out / vqj.RESULTS_FILE)
    assert list(results) == [r["id"] for r in records]
    for i, r in enumerate(records):
        qa = {"q": r["question"], "a": r["answer"], "pred": r["pred"]}
        reply = {"pred": "yes", "score": 4.8} if i % 2 == 0 else {"pred": "no", "score": 0.6}
        assert results[r["id"]] == [reply, qa]
        stored = read_json(out / f"{r['id']}.json")
        assert stored[:2] == [reply, qa] and stored[2]["judge_model"] == "gpt-3.5-turbo-stub"
    assert sum(read_json(out / f"{r['id']}.json")[2]["attempts"] for r in records) == calls
    scores = read_json(scores_path(pred_file))
    assert (scores["benchmark"], scores["headline"]) == ("msvd_qa", "accuracy_percent")
    assert (scores["judged"], scores["failed"], scores["yes"], scores["no"], scores["count"]) == (
        12,
        0,
        6,
        6,
        12,
    )
    assert scores["accuracy_percent"] == pytest.approx(50.0)
    assert scores["average_score"] == pytest.approx(6 * 4 / 12)  # 4.8 -> 4, 0.6 -> 0
    assert scores["judge"]["models_reported"] == {"gpt-3.5-turbo-stub": 12}
    assert scores["judge"]["model_requested"] == "gpt-3.5-turbo"
    assert scores["judge"]["base_url"] == base_url


def test_500s_are_retried_with_exponential_backoff(tmp_path: Path) -> None:
    records = items(2)
    pred_file = write_preds(tmp_path / "merge.jsonl", records)
    with JudgeServer(fail_first=3) as server:
        assert (
            vqj.main(judge_argv(server, pred_file, tmp_path / "out", "--workers", "1", "--retries", "3")) == 0
        )
        assert len(server.requests) == 5
    attempts = [read_json(tmp_path / "out" / f"{r['id']}.json")[2]["attempts"] for r in records]
    assert attempts == [4, 1]

    slept: list[float] = []
    item = vqj.load_predictions(pred_file)[0]
    with JudgeServer(fail_first=4) as server:
        config = vqj.JudgeConfig(base_url=server.base_url, retries=4, backoff=0.5)
        judgement = vqj.judge_item(config, item, sleep=slept.append)
    assert judgement.reply == {"pred": "yes", "score": 5} and judgement.attempts == 5
    assert slept == [0.5, 1.0, 2.0, 4.0]
    assert vqj.JudgeConfig(backoff=1.0).backoff_before(20) == vqj.MAX_BACKOFF_S


def test_429_is_retried_other_4xx_are_not(tmp_path: Path) -> None:
    pred_file = write_preds(tmp_path / "merge.jsonl", items(1))
    with JudgeServer(fail_first=1, fail_status=429) as server:
        assert vqj.main(judge_argv(server, pred_file, tmp_path / "a")) == 0
        assert len(server.requests) == 2
    with JudgeServer(fail_first=100, fail_status=400) as server:
        assert vqj.main(judge_argv(server, pred_file, tmp_path / "b", "--retries", "5")) == vqj.EXIT_FAILURES
        assert len(server.requests) == 1
    assert read_json(scores_path(pred_file))["failed"] == 1


def test_garbled_replies_are_retried_then_reported_as_failures(tmp_path: Path, capsys) -> None:
    records = items(3)
    pred_file = write_preds(tmp_path / "merge.jsonl", records)
    with JudgeServer(garble_first=2) as server:
        assert (
            vqj.main(judge_argv(server, pred_file, tmp_path / "a", "--workers", "1", "--retries", "2")) == 0
        )
        assert len(server.requests) == 5
    assert read_json(tmp_path / "a" / f"{records[0]['id']}.json")[2]["attempts"] == 3

    out = tmp_path / "b"
    with JudgeServer(garble_every=1) as server:
        assert vqj.main(judge_argv(server, pred_file, out, "--retries", "2")) == vqj.EXIT_FAILURES
        assert len(server.requests) == 3 * 3
    scores = read_json(scores_path(pred_file))
    assert (scores["judged"], scores["failed"], scores["count"]) == (0, 3, 0)
    assert scores["failed_ids"] == [r["id"] for r in records]
    assert scores["accuracy_percent"] is None and scores["average_score"] is None
    assert "garbled reply" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [vqj.RESULTS_FILE]  # nothing stored for failures

    with JudgeServer(garble_every=1) as server:
        argv = judge_argv(server, pred_file, out, "--retries", "0", "--allow-failures")
        assert vqj.main(argv) == 0


def test_timeouts_are_retried_then_fail(tmp_path: Path) -> None:
    pred_file = write_preds(tmp_path / "merge.jsonl", items(1))
    with JudgeServer(delay=0.6) as server:
        argv = judge_argv(server, pred_file, tmp_path / "a", "--retries", "1")
        argv[argv.index("--timeout") + 1] = "0.2"
        assert vqj.main(argv) == vqj.EXIT_FAILURES
        assert len(server.requests) == 2


def test_server_reported_model_is_recorded(tmp_path: Path) -> None:
    records = items(3)
    pred_file = write_preds(tmp_path / "merge.jsonl", records)
    with JudgeServer(reported_model="gpt-3.5-turbo-0613") as server:
        assert vqj.main(judge_argv(server, pred_file, tmp_path / "out")) == 0
    for r in records:
        assert read_json(tmp_path / "out" / f"{r['id']}.json")[2]["judge_model"] == "gpt-3.5-turbo-0613"
    judge = read_json(scores_path(pred_file))["judge"]
    assert judge["models_reported"] == {"gpt-3.5-turbo-0613": 3}
    assert judge["model_requested"] == "gpt-3.5-turbo"


# ------------------------------------------------------------------------------------------- resume


def test_resume_asks_only_unjudged_items(tmp_path: Path) -> None:
    """Failed items and items added since are asked on the rerun; judged ones never again."""
    records = items(6)
    out = tmp_path / "out"
    pred_file = write_preds(tmp_path / "merge.jsonl", records[:3])
    with JudgeServer(fail_every=3) as server:  # the third call fails and is not retried
        assert vqj.main(judge_argv(server, pred_file, out, "--workers", "1", "--retries", "0")) == 1
    write_preds(pred_file, records)
    with JudgeServer() as server:
        assert vqj.main(judge_argv(server, pred_file, out)) == 0
        assert sorted(asked_questions(server)) == sorted(r["question"] for r in records[2:])
    assert list(read_json(out / vqj.RESULTS_FILE)) == [r["id"] for r in records]
    with JudgeServer() as server:
        assert vqj.main(judge_argv(server, pred_file, out)) == 0
        assert server.requests == []
    assert read_json(scores_path(pred_file))["judged"] == 6


def test_stale_judgements_are_refused(tmp_path: Path) -> None:
    records = items(2)
    pred_file = write_preds(tmp_path / "merge.jsonl", records)
    with JudgeServer() as server:
        assert vqj.main(judge_argv(server, pred_file, tmp_path / "out")) == 0
        write_preds(pred_file, [records[0], {**records[1], "pred": "something else"}])
        with pytest.raises(ValueError, match="other answers"):
            vqj.main(judge_argv(server, pred_file, tmp_path / "out"))
        assert len(server.requests) == 2


def test_resume_after_kill(tmp_path: Path) -> None:
    """Kill a judging process half-way (SIGKILL): the files left are whole, and the rerun asks the server
    about exactly the items without a file."""
    records = items(20)
    pred_file = write_preds(tmp_path / "merge.jsonl", records)
    out = tmp_path / "out"
    with JudgeServer(delay=0.15) as server:
        argv = judge_argv(server, pred_file, out, "--workers", "1")
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "llava.eval.video_qa_judge", *argv], cwd=REPO_ROOT, env=env
        )
        deadline = time.monotonic() + 60
        while len(list(out.glob("v_*.json"))) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, "the judge finished before it could be killed"
    done = {p.stem for p in out.glob("v_*.json")}
    assert 4 <= len(done) < len(records)
    assert all(read_json(out / f"{item_id}.json")[1]["q"] for item_id in done)  # whole files only
    with JudgeServer() as server:
        assert vqj.main(judge_argv(server, pred_file, out, "--workers", "3")) == 0
        asked = asked_questions(server)
    assert sorted(asked) == sorted(r["question"] for r in records if r["id"] not in done)
    assert read_json(scores_path(pred_file))["judged"] == 20


# ------------------------------------------------------------------------------------------- registry


def test_declarations_per_dataset_and_report_identification(tmp_path: Path) -> None:
    declared = {name: benchmarks.get(f"{name}_qa") for name in ("msvd", "msrvtt", "activitynet")}
    assert {name: b.column for name, b in declared.items()} == {
        "msvd": "MSVD-QA",
        "msrvtt": "MSRVTT-QA",
        "activitynet": "ActivityNet-QA",
    }
    for benchmark in declared.values():
        assert benchmark.table1 is None and benchmark.scorer == "llava.eval.video_qa_judge"
        assert benchmark.max_new_tokens == 1024 and benchmark.metric == "accuracy_percent"
    assert "ActivityNet-QA" not in benchmarks.table1_columns()
    pred_file = write_preds(tmp_path / "run7b" / "merge.jsonl", items(2))
    with JudgeServer() as server:
        argv = judge_argv(server, pred_file, tmp_path / "out")
        argv[argv.index("--dataset") + 1] = "activitynet"
        assert vqj.main(argv) == 0
    path = scores_path(pred_file)
    benchmark, number = benchmarks.identify(path, read_json(path))
    assert benchmark.name == "activitynet_qa" and number == pytest.approx(50.0)
