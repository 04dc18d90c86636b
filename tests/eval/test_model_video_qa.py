"""Tests of the video-QA runner ``llava.eval.model_video_qa`` on a tiny Video-LLaVA (CPU, float32, greedy).

Videos are synthetic ``.npy`` frame arrays; question and answer files are in upstream's ``test_q.json`` /
``test_a.json`` format. The runner's output is also fed to the judge (``llava.eval.video_qa_judge``) against
the local stub server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from judge_server import JudgeServer
from tests_support import REPO_ROOT

from llava.eval import model_video_qa, video_qa_judge
from llava.eval.io import read_json, scores_path
from llava.eval.runner import get_chunk
from llava.tiny import build_tiny_video_llava, save_tiny_languagebind

QUESTIONS = [
    "What is this?",
    "What is in the image? Describe it in detail.",
    "Is it a cat?",
    "What number is it?",
    "Why?",
]
LINE_FIELDS = ["id", "question", "answer", "pred", "num_visual_tokens", "kept_fraction", "video"]
T, N = 8, 16  # the tiny tower: 8 frames of 4 x 4 patches


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    root = tmp_path_factory.mktemp("video_qa_ckpt")
    tower = save_tiny_languagebind(root / "tower")
    out = root / "tiny-video-llava"
    build_tiny_video_llava(out, tower_dir=tower, tokenizer_dir=tiny_tokenizer_dir)
    return out


def write_dataset(
    folder: Path, count: int = 5, videos: int = 4, prefix: str = "", answers: list[str] | None = None
) -> tuple[Path, Path, Path]:
    """``count`` questions over ``videos`` synthetic .npy videos (sizes and lengths vary); returns the
    video folder, test_q.json and test_a.json."""
    video_dir = folder / "videos"
    video_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(videos):
        frames = rng.integers(0, 256, (5 + 3 * i, 40 + 8 * i, 60, 3), dtype=np.uint8)
        np.save(video_dir / f"{prefix}clip{i}.npy", frames)
    rows = [
        {
            "video_name": f"clip{i % videos}",
            "question": QUESTIONS[i % len(QUESTIONS)],
            "question_id": f"v{i}_q",
        }
        for i in range(count)
    ]
    gold = [{"answer": a} for a in (answers or [f"answer {i}" for i in range(count)])]
    (folder / "test_q.json").write_text(json.dumps(rows))
    (folder / "test_a.json").write_text(json.dumps(gold))
    return video_dir, folder / "test_q.json", folder / "test_a.json"


def run(ckpt: Path, folder: Path, answers: Path, *extra: str) -> int:
    argv = ["--model-path", str(ckpt), "--video-dir", str(folder / "videos")]
    argv += [
        "--gt-file-question",
        str(folder / "test_q.json"),
        "--gt-file-answers",
        str(folder / "test_a.json"),
    ]
    argv += ["--answers-file", str(answers), "--max-new-tokens", "4", "--device", "cpu"]
    return model_video_qa.main([*argv, *extra])


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def no_json_literals(line: str) -> bool:
    """Upstream's judge ``eval()``s each line: no ``true``, ``false`` or ``null`` values."""
    values = json.loads(line).values()
    return all(v is not None and not isinstance(v, bool) for v in values)


@pytest.mark.parametrize(
    "reduction", [("--token-reduction", "prumerge", "--video-reduction-form", "adaptive"), ()]
)
def test_batched_answers_equal_batch_1_and_lines_have_the_fields(ckpt, tmp_path, reduction):
    """Batch 3 (left padding, per-video token counts that differ with the adaptive form) answers as batch 1."""
    write_dataset(tmp_path, count=5)
    assert run(ckpt, tmp_path, tmp_path / "b1.jsonl", *reduction) == 0
    assert run(ckpt, tmp_path, tmp_path / "b3.jsonl", "--batch-size", "3", *reduction) == 0
    single, batched = read_lines(tmp_path / "b1.jsonl"), read_lines(tmp_path / "b3.jsonl")
    assert [a["pred"] for a in batched] == [a["pred"] for a in single]
    assert [a["num_visual_tokens"] for a in batched] == [a["num_visual_tokens"] for a in single]
    rows = json.loads((tmp_path / "test_q.json").read_text())
    for line, row, i in zip(single, rows, range(len(rows))):
        assert list(line) == LINE_FIELDS
        assert (line["id"], line["question"], line["video"]) == (
            row["question_id"],
            row["question"],
            row["video_name"],
        )
        assert line["answer"] == f"answer {i}"
        patches = line["num_visual_tokens"] - T  # each frame's CLS is kept
        assert line["kept_fraction"] == pytest.approx(patches / (T * N), abs=1e-6)
    text = (tmp_path / "b1.jsonl").read_text().splitlines()
    assert all(no_json_literals(line) for line in text)
    counts = [a["num_visual_tokens"] for a in single]
    if reduction:
        assert all(T < c < T * (N + 1) for c in counts) and len(set(counts)) > 1
    else:
        assert counts == [T * (N + 1)] * len(rows) and {a["kept_fraction"] for a in single} == {1.0}
    settings = json.loads((tmp_path / "b1.jsonl.settings.json").read_text())
    assert settings["video"]["num_frames"] == T and settings["video"]["keep_cls"] is True
    assert settings["reduction"]["method"] == ("prumerge" if reduction else "none")


def test_the_answers_match_the_model_called_directly(ckpt, tmp_path):
    """The runner's prediction is ``generate`` on Video-LLaVA's prompt and the transformed frames."""
    from llava.model.video_loader import load_video_llava
    from llava.prompting import video_prompt_ids
    from llava.video import languagebind_video_transform, load_video

    video_dir, _, _ = write_dataset(tmp_path, count=1)
    assert run(ckpt, tmp_path, tmp_path / "a.jsonl", "--drop-cls") == 0
    (line,) = read_lines(tmp_path / "a.jsonl")
    tokenizer, model, _, _ = load_video_llava(str(ckpt), device="cpu", keep_cls=False)
    pixels = languagebind_video_transform(load_video(video_dir / "clip0.npy"), size=56)[None]
    ids = video_prompt_ids(tokenizer, QUESTIONS[0])
    with torch.no_grad():
        out = model.generate(ids[None], videos=pixels, max_new_tokens=4, do_sample=False)
    assert line["pred"] == tokenizer.decode(out[0], skip_special_tokens=True).strip()
    assert line["num_visual_tokens"] == T * N and line["kept_fraction"] == 1.0  # no CLS tokens


def test_shards_pair_answers_by_position_in_the_full_lists(ckpt, tmp_path):
    """Regression for upstream's misalignment (Video-LLaVA issue #36): shard k's question i is paired with
    answer ``start_k + i`` of the full list, not answer i."""
    count, chunks = 7, 3
    write_dataset(tmp_path, count=count)
    for idx in range(chunks):
        extra = ("--num_chunks", str(chunks), "--chunk_idx", str(idx))
        assert run(ckpt, tmp_path, tmp_path / f"{chunks}_{idx}.jsonl", *extra) == 0
    shards = [read_lines(tmp_path / f"{chunks}_{idx}.jsonl") for idx in range(chunks)]
    merged = [line for shard in shards for line in shard]
    assert [line["id"] for line in merged] == [f"v{i}_q" for i in range(count)]
    assert [line["answer"] for line in merged] == [f"answer {i}" for i in range(count)]
    # What upstream's pairing would give: each shard indexes the answers from 0.
    answers = [f"answer {i}" for i in range(count)]
    upstream = [answers[j] for k in range(chunks) for j in range(len(get_chunk(answers, chunks, k)))]
    assert upstream != [line["answer"] for line in merged]
    assert run(ckpt, tmp_path, tmp_path / "all.jsonl") == 0
    assert [line["pred"] for line in read_lines(tmp_path / "all.jsonl")] == [line["pred"] for line in merged]


def test_resume_and_settings_check(ckpt, tmp_path, capsys):
    write_dataset(tmp_path, count=4)
    answers = tmp_path / "answers.jsonl"
    assert run(ckpt, tmp_path, answers, "--batch-size", "2", "--token-reduction", "prumerge") == 0
    full = answers.read_text().splitlines(keepends=True)
    answers.write_text(full[0] + full[1][: len(full[1]) // 2])  # a run killed mid-line
    assert run(ckpt, tmp_path, answers, "--token-reduction", "prumerge") == 0
    assert answers.read_text().splitlines(keepends=True)[:1] == full[:1]
    assert [line["pred"] for line in read_lines(answers)] == [json.loads(x)["pred"] for x in full]

    answers.write_text(full[0])
    capsys.readouterr()
    assert (
        run(ckpt, tmp_path, answers, "--token-reduction", "prumerge", "--video-reduction-form", "adaptive")
        == 2
    )
    err = capsys.readouterr().err
    assert "video_reduction_form: None -> 'adaptive'" in err and "left unchanged" in err
    assert answers.read_text() == full[0]
    before = answers.read_bytes()
    assert run(ckpt, tmp_path, answers, "--token-reduction", "none") == 2
    assert answers.read_bytes() == before


def test_missing_unreadable_and_empty_videos_stop_or_are_counted(ckpt, tmp_path, capsys):
    video_dir, _, _ = write_dataset(tmp_path, count=5, videos=4)
    (video_dir / "clip3.npy").unlink()
    answers = tmp_path / "answers.jsonl"
    assert run(ckpt, tmp_path, answers) == 2
    err = capsys.readouterr().err
    assert str(video_dir / "clip3") in err and "'v3_q'" in err and "--skip-missing-videos" in err
    assert not answers.exists()  # stopped before the model was loaded

    assert run(ckpt, tmp_path, answers, "--skip-missing-videos") == 0
    err = capsys.readouterr().err
    assert "skipped: question_id 'v3_q'" in err and "skipped 1 question(s)" in err
    assert [line["id"] for line in read_lines(answers)] == ["v0_q", "v1_q", "v2_q", "v4_q"]

    np.save(video_dir / "clip3.npy", np.zeros((0, 40, 60, 3), dtype=np.uint8))  # zero frames
    (video_dir / "clip1.npy").write_bytes(b"not an array")  # unreadable
    other = tmp_path / "other.jsonl"
    assert run(ckpt, tmp_path, other, "--batch-size", "2") == 2
    err = capsys.readouterr().err
    assert str(video_dir / "clip1.npy") in err and "'v1_q'" in err
    assert [line["id"] for line in read_lines(other)] == []  # the first batch held the bad video
    assert run(ckpt, tmp_path, other, "--batch-size", "2", "--skip-missing-videos") == 0
    err = capsys.readouterr().err
    assert "skipped 2 question(s)" in err and "0 frames" in err
    assert [line["id"] for line in read_lines(other)] == ["v0_q", "v2_q", "v4_q"]


def test_activitynet_prefix_and_upstream_output_flags(ckpt, tmp_path):
    write_dataset(tmp_path, count=2, videos=2, prefix="v_")
    argv = ["--model_path", str(ckpt), "--video_dir", str(tmp_path / "videos"), "--dataset", "activitynet"]
    argv += [
        "--gt_file_question",
        str(tmp_path / "test_q.json"),
        "--gt_file_answers",
        str(tmp_path / "test_a.json"),
    ]
    argv += [
        "--output_dir",
        str(tmp_path / "out"),
        "--output_name",
        "1_0",
        "--max-new-tokens",
        "2",
        "--device",
        "cpu",
    ]
    assert model_video_qa.main(argv) == 0
    lines = read_lines(tmp_path / "out" / "1_0.json")
    assert [line["video"] for line in lines] == ["v_clip0", "v_clip1"]


def test_question_files_are_checked(ckpt, tmp_path, capsys):
    write_dataset(tmp_path, count=3)
    (tmp_path / "test_a.json").write_text(json.dumps([{"answer": "a"}] * 2))
    assert run(ckpt, tmp_path, tmp_path / "a.jsonl") == 2
    assert "has 3 questions but" in capsys.readouterr().err
    rows = json.loads((tmp_path / "test_q.json").read_text())
    (tmp_path / "test_q.json").write_text(json.dumps([rows[0], rows[1], {**rows[2], "question_id": "v0_q"}]))
    (tmp_path / "test_a.json").write_text(json.dumps([{"answer": "a"}] * 3))
    assert run(ckpt, tmp_path, tmp_path / "a.jsonl") == 2
    assert "question_id 'v0_q' repeats item 0" in capsys.readouterr().err
    assert run(ckpt, tmp_path, tmp_path / "a.jsonl", "--output_name", "x") == 2
    assert "not both" in capsys.readouterr().err
    assert not (tmp_path / "a.jsonl").exists()


def test_max_questions_and_the_judge_read_the_answers(ckpt, tmp_path):
    """The first N questions only; the judge scores the runner's file as it is."""
    write_dataset(tmp_path, count=5, answers=["a", "b", "c", "d", "e"])
    answers = tmp_path / "run" / "merge.jsonl"
    assert run(ckpt, tmp_path, answers, "--max-questions", "3") == 0
    lines = read_lines(answers)
    assert [line["id"] for line in lines] == ["v0_q", "v1_q", "v2_q"]
    with JudgeServer() as server:
        argv = ["--dataset", "msvd", "--pred-file", str(answers), "--output-dir", str(tmp_path / "judge")]
        argv += ["--base-url", server.base_url, "--no-progress", "--backoff", "0"]
        assert video_qa_judge.main(argv) == 0
    scores = read_json(scores_path(answers))
    assert scores["benchmark"] == "msvd_qa" and scores["judged"] == 3 and scores["failed"] == 0
    expected_yes = sum(line["answer"].lower() in line["pred"].lower() for line in lines)
    assert scores["yes"] == expected_yes and scores["yes"] + scores["no"] == 3


# ---------------------------------------------------------------------------------------------
# The Table 3 report
# ---------------------------------------------------------------------------------------------


def judged_run(
    folder: Path, dataset: str, accuracy: float, score: float, tokens: list[int], models: list[str]
):
    """A ``merge.jsonl`` with ``tokens`` per answer and the judge's ``merge.scores.json`` beside it."""
    from llava.eval.eval_video_qa import BENCHMARKS

    folder.mkdir(parents=True)
    lines = [
        {
            "id": f"q{i}",
            "question": "?",
            "answer": "a",
            "pred": "a",
            "num_visual_tokens": n,
            "kept_fraction": (n - 8) / 2048,
        }
        for i, n in enumerate(tokens)
    ]
    (folder / "merge.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    scores = {
        "accuracy_percent": accuracy,
        "average_score": score,
        "judge": {"models_reported": dict.fromkeys(models, 1)},
    }
    (folder / "merge.scores.json").write_text(json.dumps(BENCHMARKS[dataset].stamp(scores)))


def test_report_builds_table_3_from_the_judge_score_files(tmp_path):
    from llava.eval import report

    root = tmp_path / "GPT_Zero_Shot_QA"
    judged_run(
        root / "MSVD_Zero_Shot_QA" / "video-llava-7b",
        "msvd",
        70.66,
        3.94,
        [2056, 2056],
        ["gpt-3.5-turbo-0613"],
    )
    judged_run(
        root / "MSVD_Zero_Shot_QA" / "video-llava-7b-prumerge",
        "msvd",
        71.12,
        3.91,
        [272, 272],
        ["gpt-3.5-turbo-0613"],
    )
    judged_run(
        root / "MSRVTT_Zero_Shot_QA" / "video-llava-7b", "msrvtt", 59.2, 3.46, [2056], ["gpt-3.5-turbo-0613"]
    )
    judged_run(
        root / "Activitynet_Zero_Shot_QA" / "video-llava-7b-prumerge",
        "activitynet",
        48.3,
        3.4,
        [272, 300],
        ["gpt-3.5-turbo-0125"],
    )
    pope = tmp_path / "pope" / "answers"
    pope.mkdir(parents=True)
    (pope / "llava-7b.scores.json").write_text(
        json.dumps({"benchmark": "pope", "headline": "mean_f1_percent", "mean_f1_percent": 85.9})
    )

    video = report.main(["--results", str(tmp_path), "--video", "--json", str(tmp_path / "r.json")])
    assert video == (  # rows in the order their first score file is found (sorted paths)
        "Zero-shot video QA (LLM judge): accuracy % / average score (0-5)\n\n"
        "| Model | MSVD-QA | MSRVTT-QA | ActivityNet-QA |\n|---|---|---|---|\n"
        "| video-llava-7b-prumerge | 71.1 / 3.9 | - | 48.3 / 3.4 |\n"
        "| video-llava-7b | 70.7 / 3.9 | 59.2 / 3.5 | - |\n\n"
        "Mean visual tokens per video (kept fraction of the patch tokens)\n\n"
        "| Model | MSVD-QA | MSRVTT-QA | ActivityNet-QA |\n|---|---|---|---|\n"
        "| video-llava-7b-prumerge | 272.0 (12.9%) | - | 286.0 (13.6%) |\n"
        "| video-llava-7b | 2056.0 (100.0%) | 2056.0 (100.0%) | - |\n\n"
        "Judge models reported by the server: gpt-3.5-turbo-0125, gpt-3.5-turbo-0613\n"
    )
    cell = json.loads((tmp_path / "r.json").read_text())["video-llava-7b-prumerge"]["ActivityNet-QA"]
    assert cell["score"] == 48.3 and cell["second"] == 3.4 and cell["visual_tokens"] == 286.0
    assert cell["kept_fraction"] == pytest.approx(278 / 2048)

    both = report.main(["--results", str(tmp_path)])
    image, _, rest = both.partition("Zero-shot video QA")
    assert "| llava-7b | - | - | - | 85.9 | - | - |" in image and "video-llava" not in image
    assert "MSVD-QA" not in image and "| video-llava-7b | 70.7 / 3.9 |" in rest


# ---------------------------------------------------------------------------------------------
# scripts/video_llava/eval/*.sh
# ---------------------------------------------------------------------------------------------

VIDEO_SCRIPTS = REPO_ROOT / "scripts" / "video_llava" / "eval"


@pytest.mark.parametrize("name", ["msvd.sh", "msrvtt.sh", "activitynet.sh", "_common.sh"])
def test_video_scripts_parse(name):
    assert subprocess.run(["bash", "-n", str(VIDEO_SCRIPTS / name)]).returncode == 0


@pytest.mark.slow  # three Python processes (two shards and the judge): ~15 s on an idle machine
def test_activitynet_script_end_to_end(ckpt, tmp_path):
    """Two CPU shards, merge, the judge (a local stub server) and the Table 3 report, in upstream's layout."""
    from llava.eval import report

    qa = tmp_path / "eval" / "GPT_Zero_Shot_QA" / "Activitynet_Zero_Shot_QA"
    write_dataset(qa, count=5, videos=3, prefix="v_")
    (qa / "videos").rename(qa / "all_test")
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DTYPE", "OPENAI_API_KEY", "RUN_NAME")},
        "EVAL_DIR": str(tmp_path / "eval"),
        "CHUNKS": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHON": sys.executable,
        "EXTRA_ARGS": "--max-new-tokens 3 --device cpu",
        "MAX_QUESTIONS": "4",
        "VIDEO_REDUCTION_FORM": "adaptive",
        "JUDGE_ARGS": "--no-progress --backoff 0",
        "OMP_NUM_THREADS": "1",
    }
    with JudgeServer() as server:
        env["JUDGE_BASE_URL"] = server.base_url
        result = subprocess.run(
            ["bash", str(VIDEO_SCRIPTS / "activitynet.sh"), str(ckpt), "", "prumerge"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        judged = len(server.requests)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    name = re.search(r"^\[eval\] (\S+): activitynet answers", result.stderr, re.M).group(1)
    assert re.fullmatch(r"tiny-video-llava-prumerge-x\d+-first4-adaptive", name)
    out = qa / name
    assert (out / "2_0.jsonl").is_file() and (out / "2_1.jsonl").is_file()
    merged = read_lines(out / "merge.jsonl")
    assert [line["id"] for line in merged] == [f"v{i}_q" for i in range(4)]
    assert [line["answer"] for line in merged] == [f"answer {i}" for i in range(4)]
    assert [line["video"] for line in merged] == ["v_clip0", "v_clip1", "v_clip2", "v_clip0"]
    settings = json.loads((out / "2_1.jsonl.settings.json").read_text())
    assert settings["video"]["reduction_form"] == "adaptive" and settings["reduction"]["method"] == "prumerge"
    assert judged == 4 and (out / "judge_gpt-3.5-turbo" / "results.json").is_file()
    scores = read_json(out / "merge.scores.json")
    assert scores["benchmark"] == "activitynet_qa" and scores["judged"] == 4
    table = report.main(["--results", str(tmp_path / "eval"), "--video"])
    assert f"| {name} | - | - | {scores['accuracy_percent']:.1f} / {scores['average_score']:.1f} |" in table
