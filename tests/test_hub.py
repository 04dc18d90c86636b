"""Tests of ``llava.hub``: model card, dry run, offline failure and bad inputs, without any network."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import pytest

from llava import hub


@pytest.fixture(scope="module")
def prumerge_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny full LLaVA checkpoint that records ``mm_token_reduction`` = PruMerge."""
    from llava.tiny import build_tiny_llava

    out = tmp_path_factory.mktemp("prumerge_ckpt")
    build_tiny_llava(out, reduction="prumerge")
    return out


@pytest.fixture(scope="module")
def report_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results table written by ``llava.eval.report --json`` from POPE and SQA score files."""
    from llava.eval import report

    root = tmp_path_factory.mktemp("eval")
    for bench, key, score, tokens in (
        ("pope", "mean_f1_percent", 76.3, 32),
        ("sqa", "img_accuracy_percent", 68.5, 40),
    ):
        folder = root / bench / "answers"
        folder.mkdir(parents=True)
        (folder / "tiny-prumerge.scores.json").write_text(json.dumps({key: score}))
        answers = [{"question_id": i, "num_visual_tokens": tokens + i} for i in range(3)]
        (folder / "tiny-prumerge.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    out = root / "report.json"
    report.main(["--results", str(root), "--json", str(out)])
    return out


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the Hub API must not be used")

    monkeypatch.setattr(huggingface_hub.HfApi, "__init__", refuse)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", refuse)


def _connect_error() -> Exception:
    try:
        import httpx2 as httpx
    except ImportError:
        try:
            import httpx
        except ImportError:
            return OSError("[Errno -2] Name or service not known")
    return httpx.ConnectError("[Errno -2] Name or service not known")


def test_dry_run_writes_card_and_lists_files(prumerge_ckpt, report_json, tmp_path, monkeypatch, capsys):
    _no_network(monkeypatch)
    staging = tmp_path / "stage"
    argv = [
        "--model-path",
        str(prumerge_ckpt),
        "--results",
        str(report_json),
        "--repo-id",
        "me/tiny-prumerge",
        "--dry-run",
        "--staging-dir",
        str(staging),
    ]
    assert hub.main(argv) == 0
    card = (staging / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert "- llava\n- prumerge\n- token-reduction\n" in card
    assert "Method: **prumerge/reference**" in card and "`num_neighbors` | `32`" in card
    assert (
        "| tiny-prumerge | - | 68.5 | - | 76.3 | - | - | 37.0 |" in card
    )  # VQAv2/MMB not run; mean of 41, 33
    assert "| tiny-prumerge | - | 41.0 | - | 33.0 | - | - |" in card
    assert 'load_pretrained_model("me/tiny-prumerge")' in card
    assert "python -m llava.serve.cli --model-path me/tiny-prumerge" in card
    assert "tokenizer_model_max_length | `2048`" in card
    out = capsys.readouterr().out
    assert "model.safetensors" in out and "vision_tower/model.safetensors" in out and "README.md" in out
    assert "total (" in out
    assert not (prumerge_ckpt / "README.md").exists()  # the user's folder is untouched


def test_upload_offline_is_one_line_exit_2(prumerge_ckpt, report_json, monkeypatch, capsys):
    def unreachable(self, *args, **kwargs):
        raise _connect_error()

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", unreachable)
    argv = [
        "--model-path",
        str(prumerge_ckpt),
        "--results",
        str(report_json),
        "--repo-id",
        "me/tiny",
        "--skip-load-check",
    ]
    assert hub.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot reach the Hugging Face Hub (")
    assert err.endswith("check your network or use --dry-run")
    assert "\n" not in err and "Traceback" not in err


def test_upload_calls_create_repo_and_upload_folder(prumerge_ckpt, report_json, monkeypatch):
    calls = {}
    monkeypatch.setattr(
        huggingface_hub.HfApi,
        "create_repo",
        lambda self, repo_id, **kw: calls.update(create=(repo_id, kw)) or f"https://hf.co/{repo_id}",
    )
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kw: calls.update(upload=kw))
    argv = [
        "--model-path",
        str(prumerge_ckpt),
        "--results",
        str(report_json),
        "--repo-id",
        "me/tiny",
        "--private",
        "--token",
        "hf_x",
        "--skip-load-check",
    ]
    assert hub.main(argv) == 0
    assert calls["create"] == ("me/tiny", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert "README.md" in calls["upload"]["allow_patterns"]
    assert "config.json" in calls["upload"]["allow_patterns"]


def test_not_a_checkpoint(tmp_path, report_json, monkeypatch, capsys):
    _no_network(monkeypatch)
    (tmp_path / "notes.txt").write_text("hello")
    argv = ["--model-path", str(tmp_path), "--results", str(report_json), "--repo-id", "me/x", "--dry-run"]
    assert hub.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not a LLaVA checkpoint folder" in err and "\n" not in err


def test_bad_results_and_repo_id(prumerge_ckpt, tmp_path, monkeypatch, capsys):
    _no_network(monkeypatch)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([1, 2]))
    base = ["--model-path", str(prumerge_ckpt), "--dry-run", "--skip-load-check"]
    assert hub.main([*base, "--results", str(bad), "--repo-id", "me/x"]) == 2
    assert "is not a results table" in capsys.readouterr().err
    assert hub.main([*base, "--results", str(bad), "--repo-id", "noslash"]) == 2
    assert "must be user/name" in capsys.readouterr().err


def test_lora_card_uses_base(tmp_path, report_json, monkeypatch, capsys):
    _no_network(monkeypatch)
    config = {
        "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "model_type": "llava_llama",
        "_name_or_path": "lmsys/vicuna-7b-v1.5",
        "mm_projector_lr": 2e-5,
        "mm_token_reduction": {"method": "prumerge_plus", "variant": "reference"},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 128, "lora_alpha": 256}))
    argv = [
        "--model-path",
        str(tmp_path),
        "--results",
        str(report_json),
        "--repo-id",
        "me/lora",
        "--dry-run",
        "--skip-load-check",
        "--staging-dir",
        str(tmp_path / "stage"),
    ]
    assert hub.main(argv) == 0
    card = (tmp_path / "stage" / "README.md").read_text()
    assert "base_model: lmsys/vicuna-7b-v1.5" in card and "license: llama2" in card
    assert 'model_base="lmsys/vicuna-7b-v1.5"' in card and "--model-base lmsys/vicuna-7b-v1.5" in card
    assert "- prumerge-plus" in card and "lora r | `128`" in card and "mm_projector_lr | `2e-05`" in card


def test_import_does_not_load_huggingface_hub():
    import subprocess
    import sys

    code = "import sys, llava.hub; print('huggingface_hub' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    )


@pytest.fixture
def local_tower_ckpt(prumerge_ckpt: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The tiny checkpoint with its CLIP moved out to an absolute local path (as training on a cluster does)."""
    import shutil

    folder = tmp_path / "ckpt"
    shutil.copytree(prumerge_ckpt, folder)
    tower = tmp_path / "hub" / "models--openai--clip-vit-large-patch14-336" / "snapshots" / "abc123"
    shutil.move(folder / "vision_tower", tower)
    config = json.loads((folder / "config.json").read_text())
    config["mm_vision_tower"] = str(tower)
    (folder / "config.json").write_text(json.dumps(config))
    return folder, tower


def test_a_local_tower_path_is_never_published(local_tower_ckpt, report_json, tmp_path, monkeypatch, capsys):
    _no_network(monkeypatch)
    folder, tower = local_tower_ckpt
    argv = ["--model-path", str(folder), "--results", str(report_json), "--repo-id", "me/x", "--dry-run"]
    # from the Hub-cache folder name
    assert hub.main([*argv, "--staging-dir", str(tmp_path / "a")]) == 0
    staged = json.loads((tmp_path / "a" / "config.json").read_text())
    assert staged["mm_vision_tower"] == "openai/clip-vit-large-patch14-336"
    assert "Vision tower: `openai/clip-vit-large-patch14-336`" in (tmp_path / "a" / "README.md").read_text()
    assert json.loads((folder / "config.json").read_text())["mm_vision_tower"] == str(tower)  # original kept
    # an explicit id wins
    assert hub.main([*argv, "--staging-dir", str(tmp_path / "b"), "--vision-tower-id", "me/my-clip"]) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["mm_vision_tower"] == "me/my-clip"
    # a folder that records no id: refused, with the flag named
    plain = tmp_path / "clip-local"
    tower.rename(plain)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "mm_vision_tower": str(plain)}))
    capsys.readouterr()
    assert hub.main([*argv, "--staging-dir", str(tmp_path / "c"), "--skip-load-check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(plain) in err and "--vision-tower-id" in err
