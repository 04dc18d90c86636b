"""Release a trained LLaVA-1.5 (+ PruMerge) checkpoint to the Hugging Face Hub with a model card.

Usage::

    python -m llava.hub --model-path CKPT [--model-base BASE] --results report.json \\
        --repo-id user/name [--private] [--dry-run] [--token T] [--in-place]

Steps: recognise the checkpoint (full, LoRA or projector-only, by its files, as
:func:`llava.model.loader.checkpoint_kind`), read the evaluation table written by
``python -m llava.eval.report --json report.json``, write a model card ``README.md`` (into a staging
copy of the folder made of hard links, or into the folder itself with ``--in-place``), check the
staged folder loads with ``load_pretrained_model`` on the CPU, then ``HfApi.create_repo`` +
``upload_folder``. ``--dry-run`` does everything but the upload and lists the files that would be
sent. A ``mm_vision_tower`` that is a local path is never published: it becomes ``--vision-tower-id``,
or the Hub id the local CLIP folder records (a Hub-cache folder name), or the release stops. Every failure prints one ``error: ...`` line on stderr and exits with status 2.
Nothing is imported from ``huggingface_hub`` or downloaded at import time.
"""

from __future__ import annotations

import argparse
import fnmatch
import gc
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from llava.eval.report import COLUMNS, fmt

TAGS = ("llava", "prumerge", "token-reduction")
SKIPPED = (".*", "checkpoint-*", "runs", "wandb", "__pycache__", "*.pyc", "README.md")
TRAINING_ARG_FIELDS = (
    "learning_rate",
    "mm_projector_lr",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "weight_decay",
    "warmup_ratio",
    "lr_scheduler_type",
    "model_max_length",
    "bf16",
    "fp16",
    "lora_enable",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "group_by_modality_length",
    "deepspeed",
    "seed",
)
CONFIG_FIELDS = (
    "mm_projector_lr",
    "tokenizer_model_max_length",
    "tune_mm_mlp_adapter",
    "mm_projector_type",
    "mm_vision_select_layer",
    "mm_vision_select_feature",
    "image_aspect_ratio",
    "mm_patch_merge_type",
    "torch_dtype",
    "dtype",
)
DEFAULT_DATA = (
    "Not recorded in the checkpoint. The LLaVA-1.5 recipe of this codebase (`scripts/v1_5/finetune*.sh`) "
    "trains on the visual instruction mixture `llava_v1_5_mix665k.json` (COCO, GQA, OCR-VQA, TextVQA, "
    "Visual Genome), after projector pretraining on LCS-558K."
)


class ReleaseError(Exception):
    """A failure with a one-line, actionable message (printed as ``error: ...``, exit status 2)."""


def one_line(err: BaseException) -> str:
    """``Type: message`` on one line, at most 300 characters."""
    text = " ".join(str(err).split()) or "no details"
    return f"{type(err).__name__}: {text}"[:300]


def read_json_file(path: Path, what: str) -> Any:
    """The JSON document at ``path``; a :class:`ReleaseError` naming ``what`` when missing or broken."""
    if not path.is_file():
        raise ReleaseError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReleaseError(f"{what} {path} is not readable JSON ({one_line(err)})") from err


def inspect_checkpoint(folder: Path) -> tuple[str, dict[str, Any]]:
    """``(kind, raw config.json)`` of a checkpoint folder; a clear error when it is none."""
    from llava.model.loader import checkpoint_kind

    if not folder.is_dir():
        raise ReleaseError(f"--model-path {folder} is not a folder; pass the trained checkpoint folder")
    try:
        kind = checkpoint_kind(folder)
    except ValueError as err:
        raise ReleaseError(str(err)) from err
    config = read_json_file(folder / "config.json", "the checkpoint's config")
    if not isinstance(config, dict) or not (
        config.get("mm_vision_tower") or config.get("model_type") in ("llava", "llava_llama")
    ):
        raise ReleaseError(f"{folder}/config.json is not a LLaVA config (no mm_vision_tower)")
    return kind, config


def read_results(path: Path, rows: list[str] | None = None) -> dict[str, dict]:
    """The ``{row: {benchmark: {"score", "visual_tokens", ...}}}`` table of ``llava.eval.report --json``."""
    table = read_json_file(path, "the results file")
    valid = isinstance(table, dict) and all(
        isinstance(row, dict) and all(isinstance(c, dict) and "score" in c for c in row.values())
        for row in table.values()
    )
    if not valid or not table:
        raise ReleaseError(
            f"{path} is not a results table of `python -m llava.eval.report --json` "
            "({row name: {benchmark: {score, visual_tokens}}})"
        )
    if rows:
        missing = [r for r in rows if r not in table]
        if missing:
            raise ReleaseError(f"--results-row {missing} not in {path} (rows: {list(table)})")
        table = {r: table[r] for r in rows}
    empty = {"score": None, "visual_tokens": None}
    return {name: {c: {**empty, **row.get(c, {})} for c in COLUMNS} for name, row in table.items()}


def _training_args_bin(path: Path) -> dict[str, Any]:
    """Fields of a ``training_args.bin`` (a pickled ``TrainingArguments`` this run wrote itself)."""
    import torch

    try:
        args = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - an unreadable file only loses the card's table rows
        return {}
    return {f: getattr(args, f) for f in TRAINING_ARG_FIELDS if getattr(args, f, None) not in (None, "")}


def _trainer_state(path: Path) -> dict[str, Any]:
    """Steps, epochs, batch size, peak learning rate and final loss of a ``trainer_state.json``."""
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    values = {k: state[k] for k in ("global_step", "epoch", "train_batch_size", "max_steps") if k in state}
    history = state.get("log_history", [])
    rates = [e["learning_rate"] for e in history if "learning_rate" in e]
    losses = [e.get("train_loss", e.get("loss")) for e in history if "loss" in e or "train_loss" in e]
    if rates:
        values["peak learning_rate"] = max(rates)
    if losses:
        values["final loss"] = round(losses[-1], 4)
    return values


def training_hparams(folder: Path, config: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """``(name, value, source file)`` rows: training args and trainer state when saved, else config fields."""
    rows: list[tuple[str, Any, str]] = []
    for name, reader in (("training_args.bin", _training_args_bin), ("trainer_state.json", _trainer_state)):
        if (folder / name).is_file():
            rows += [(k, v, name) for k, v in reader(folder / name).items()]
    if (folder / "adapter_config.json").is_file():
        adapter = json.loads((folder / "adapter_config.json").read_text())
        for key in ("r", "lora_alpha", "lora_dropout", "target_modules"):
            if adapter.get(key) is not None:
                rows.append((f"lora {key}", adapter[key], "adapter_config.json"))
    seen = {name for name, _, _ in rows}
    rows += [
        (k, config[k], "config.json") for k in CONFIG_FIELDS if config.get(k) is not None and k not in seen
    ]
    return rows


def base_model_of(kind: str, config: dict[str, Any], model_base: str | None) -> str | None:
    """The base: ``--model-base`` for LoRA/projector folders, else the config's ``_name_or_path``."""
    if kind != "full" and model_base:
        return model_base
    return config.get("_name_or_path") or model_base or None


def hub_id(name: str | None) -> str | None:
    """``name`` when it looks like a Hub model id (``owner/name``, not a local path), else None."""
    if not name or name.startswith((".", "/", "~")) or Path(name).exists() or name.count("/") != 1:
        return None
    return name


def guess_license(base: str | None) -> str | None:
    """The licence the base LLM implies (Vicuna v1.5 and Llama 2 derivatives: ``llama2``), if known."""
    lowered = (base or "").lower()
    if "vicuna" in lowered and "v1.5" in lowered or "llama-2" in lowered:
        return "llama2"
    return None


def front_matter(base: str | None, license_id: str | None, method: str) -> str:
    """The card's YAML header (``library_name``, ``base_model``, ``tags``, ``license``)."""
    lines = ["---", "library_name: transformers", "pipeline_tag: image-text-to-text"]
    if license_id:
        lines.append(f"license: {license_id}")
    if hub_id(base):
        lines.append(f"base_model: {base}")
    tags = list(TAGS) + ([method.replace("_", "-")] if method not in ("none", "prumerge") else [])
    lines += ["tags:"] + [f"- {tag}" for tag in tags] + ["---", ""]
    return "\n".join(lines)


def reduction_section(config: dict[str, Any]) -> str:
    """The token reduction recorded in ``mm_token_reduction`` and its parameters."""
    from llava.model.token_reduction import ReductionConfig

    recorded = config.get("mm_token_reduction")
    reduction = ReductionConfig.from_value(recorded)
    text = f"## Token reduction\n\nMethod: **{reduction.describe()}**"
    if not recorded:
        return text + " (no `mm_token_reduction` in `config.json`: all 576 visual tokens are kept).\n"
    params = {k: v for k, v in reduction.to_dict().items() if v is not None}
    rows = "".join(f"| `{k}` | `{json.dumps(v)}` |\n" for k, v in params.items())
    return (
        f"{text}, from `mm_token_reduction` in `config.json`; the loader applies it automatically.\n\n"
        f"| parameter | value |\n|---|---|\n{rows}"
    )


def _cell_tokens(cell: dict) -> str:
    return "-" if cell.get("visual_tokens") is None else f"{cell['visual_tokens']:.1f}"


def results_section(table: dict[str, dict], source: str) -> str:
    """Table 1 of the paper's layout: scores, the mean visual tokens per row, and tokens per benchmark."""
    head = "| Model | " + " | ".join(COLUMNS) + " |"
    rule = "|---|" + "---|" * len(COLUMNS)
    scores, tokens = [], []
    for name, row in table.items():
        counts = [row[c]["visual_tokens"] for c in COLUMNS if row[c].get("visual_tokens") is not None]
        mean = f"{sum(counts) / len(counts):.1f}" if counts else "-"
        scores.append(f"| {name} | " + " | ".join(fmt(c, row[c]) for c in COLUMNS) + f" | {mean} |")
        tokens.append(f"| {name} | " + " | ".join(_cell_tokens(row[c]) for c in COLUMNS) + " |")
    return (
        f"## Results\n\nFrom `{source}` (`python -m llava.eval.report --json`). VQAv2 and MMB are scored by "
        "their evaluation servers (`server`: answers written, score not given; `-`: not run).\n\n"
        f"{head[:-1]}| Avg. visual tokens |\n{rule}---|\n"
        + "\n".join(scores)
        + f"\n\nAverage visual tokens per image, per benchmark (576 without reduction):\n\n{head}\n{rule}\n"
        + "\n".join(tokens)
        + "\n"
    )


def hparams_section(rows: list[tuple[str, Any, str]]) -> str:
    """The training hyper-parameters table."""
    if not rows:
        return "## Training hyper-parameters\n\nNone recorded in the checkpoint.\n"
    body = "".join(f"| {name} | `{value}` | {source} |\n" for name, value, source in rows)
    return f"## Training hyper-parameters\n\n| name | value | source |\n|---|---|---|\n{body}"


def usage_section(repo_id: str, kind: str, base: str | None) -> str:
    """How to load the released checkpoint with this codebase (Python and CLI)."""
    base_arg = f', model_base="{base}"' if kind != "full" else ""
    base_flag = f" --model-base {base}" if kind != "full" else ""
    return (
        "## How to use\n\nWith the LLaVA-1.5 + PruMerge codebase (`pip install -e .`); the token reduction "
        "recorded in the config is applied on load.\n\n```python\n"
        "from llava.model.loader import load_pretrained_model\n\n"
        f'tokenizer, model, image_processor, context_len = load_pretrained_model("{repo_id}"{base_arg})\n'
        "```\n\nCommand line:\n\n```bash\n"
        f"python -m llava.serve.cli --model-path {repo_id}{base_flag} --image-file view.jpg "
        '--query "What is in the image?"\n```\n'
    )


def build_card(
    repo_id: str,
    kind: str,
    config: dict[str, Any],
    folder: Path,
    base: str | None,
    results: dict[str, dict],
    results_path: Path,
    data: str | None,
    license_id: str | None,
) -> str:
    """The whole model card (YAML front matter + markdown)."""
    method = (config.get("mm_token_reduction") or {}).get("method", "none")
    kinds = {"full": "a full (merged) checkpoint", "lora": "a LoRA adapter", "projector": "a projector only"}
    base_text = f"`{base}`" if base else "not recorded"
    tower = config.get("mm_vision_tower")
    tower_note = " (included in this repository)" if tower and (folder / str(tower)).is_dir() else ""
    sections = [
        front_matter(base, license_id, method),
        f"# {repo_id.split('/')[-1]}\n\nLLaVA-1.5 trained with visual token reduction (PruMerge). "
        f"This repository holds {kinds[kind]}.\n",
        f"## Base model\n\nLanguage model: {base_text}"
        + (" (pass it as `model_base` when loading)" if kind != "full" else "")
        + f". Vision tower: `{tower}`{tower_note}.\n",
        f"## Data\n\n{data or DEFAULT_DATA}\n",
        reduction_section(config),
        hparams_section(training_hparams(folder, config)),
        results_section(results, results_path.name),
        usage_section(repo_id, kind, base),
    ]
    return "\n".join(sections)


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
HUB_CACHE_FOLDER = re.compile(r"models--([\w.-]+?)--([\w.-]+)")


def recorded_hub_id(tower: Path) -> str | None:
    """The Hub id a local CLIP folder came from: its config's ``_name_or_path``, or a Hub-cache folder name."""
    try:
        name = json.loads((tower / "config.json").read_text()).get("_name_or_path", "")
    except (OSError, ValueError):
        name = ""
    if isinstance(name, str) and HUB_ID.fullmatch(name) and not Path(name).exists():
        return name
    for part in reversed(tower.resolve().parts):  # ~/.cache/huggingface/hub/models--org--name/snapshots/<sha>
        match = HUB_CACHE_FOLDER.fullmatch(part)
        if match:
            return f"{match.group(1)}/{match.group(2)}"
    return None


def release_tower(config: dict[str, Any], folder: Path, vision_tower_id: str | None) -> str | None:
    """The ``mm_vision_tower`` to publish: a Hub id or a folder shipped inside the checkpoint, never a local path.

    Returns None when the recorded value can stay (a Hub id, or a folder inside the checkpoint).
    """
    tower = config.get("mm_vision_tower")
    if vision_tower_id is not None:
        if not HUB_ID.fullmatch(vision_tower_id):
            raise ReleaseError(f"--vision-tower-id {vision_tower_id!r} must be a Hub id, org/name")
        return vision_tower_id
    if not tower:
        return None
    local = Path(str(tower)).expanduser()
    if not local.is_absolute() and (folder / local).is_dir():
        return None  # shipped in the repository
    if not local.is_absolute() and not local.exists() and HUB_ID.fullmatch(str(tower)):
        return None  # already a Hub id
    found = recorded_hub_id(local) if local.is_dir() else None
    if found is None:
        raise ReleaseError(
            f"config.json's mm_vision_tower is the local path {tower}, which no downloader has: pass "
            "--vision-tower-id with the Hub id of that CLIP (e.g. openai/clip-vit-large-patch14-336), or copy "
            "the tower into the checkpoint folder and point mm_vision_tower at it"
        )
    return found


def release_files(folder: Path) -> list[Path]:
    """The files of ``folder`` to publish (relative paths), without dot files, trainer checkpoints, logs
    and an old ``README.md``."""
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(fnmatch.fnmatch(part, p) for part in rel.parts for p in SKIPPED):
            files.append(rel)
    return files


def write_config(target: Path, config: dict[str, Any]) -> None:
    """Replaces ``target/config.json`` by a new file (never writes through a hard link to the original)."""
    path = target / "config.json"
    path.unlink(missing_ok=True)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def stage(folder: Path, staging: Path, card: str) -> Path:
    """Hard links (copies across file systems) of the release files in ``staging``, plus the card."""
    if staging.exists() and any(staging.iterdir()):
        raise ReleaseError(f"the staging folder {staging} is not empty; pass an empty or new --staging-dir")
    for rel in release_files(folder):
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(folder / rel, target)
        except OSError:
            shutil.copy2(folder / rel, target)
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "README.md").write_text(card)
    return staging


def check_loadable(folder: Path, base: str | None) -> None:
    """Loads the folder with ``load_pretrained_model`` on the CPU (bfloat16, to halve the memory)."""
    import torch

    from llava.model.loader import load_pretrained_model

    try:
        loaded = load_pretrained_model(str(folder), base, device="cpu", dtype=torch.bfloat16)
    except Exception as err:  # noqa: BLE001 - any failure means the release would not load
        raise ReleaseError(f"{folder} does not load with load_pretrained_model ({one_line(err)})") from err
    del loaded
    gc.collect()


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection-level exception types of the HTTP clients ``huggingface_hub`` may use."""
    import importlib

    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (
        ("httpx2", "TransportError"),
        ("httpx", "TransportError"),
        ("requests", "ConnectionError"),
        ("requests", "Timeout"),
    ):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def upload_message(err: BaseException) -> str:
    """The one-line message for an upload failure."""
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    if isinstance(err, LocalTokenNotFoundError):
        return "no Hugging Face token: run `hf auth login`, set HF_TOKEN or pass --token"
    if isinstance(err, HfHubHTTPError) and getattr(err, "response", None) is not None:
        return f"the Hugging Face Hub refused the request ({one_line(err)}); check --token and --repo-id"
    if isinstance(err, (*_network_errors(), OSError)):
        return f"cannot reach the Hugging Face Hub ({one_line(err)}); check your network or use --dry-run"
    return f"the upload failed ({one_line(err)})"


def upload(folder: Path, files: list[Path], repo_id: str, private: bool, token: str | None) -> str:
    """``create_repo`` (kept if it exists) and ``upload_folder`` of ``files``; returns the repo URL."""
    from huggingface_hub import HfApi

    try:
        api = HfApi(token=token)
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            commit_message="Release with llava.hub",
            allow_patterns=[rel.as_posix() for rel in files],
        )
    except Exception as err:  # noqa: BLE001 - every Hub failure becomes one actionable line
        raise ReleaseError(upload_message(err)) from err
    return str(url)


def list_files(folder: Path, files: list[Path]) -> str:
    """A listing of ``files`` with sizes and the total."""
    sizes = [(folder / rel).stat().st_size for rel in files]
    lines = [f"  {size / 2**20:10.2f} MiB  {rel.as_posix()}" for rel, size in zip(files, sizes)]
    return "\n".join(lines + [f"  {sum(sizes) / 2**20:10.2f} MiB  total ({len(files)} files)"])


def build_parser(prog: str = "python -m llava.hub") -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--model-path", required=True, help="the trained checkpoint folder (full or LoRA)")
    parser.add_argument("--model-base", default=None, help="base LLM of a LoRA/projector checkpoint (Hub id)")
    parser.add_argument("--results", required=True, help="JSON of `python -m llava.eval.report --json`")
    parser.add_argument(
        "--results-row", action="append", default=None, help="keep only this row (repeatable)"
    )
    parser.add_argument("--repo-id", required=True, help="the Hub repository, user/name")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--dry-run", action="store_true", help="do everything but the upload; list the files")
    parser.add_argument("--token", default=None, help="Hub token (default: the saved login or HF_TOKEN)")
    parser.add_argument("--in-place", action="store_true", help="write README.md into --model-path itself")
    parser.add_argument(
        "--staging-dir", default=None, help="where to stage the release (default: a temp dir)"
    )
    parser.add_argument("--data", default=None, help="the card's training-data text")
    parser.add_argument("--license", default=None, help="licence id for the card (default: from the base)")
    parser.add_argument("--skip-load-check", action="store_true", help="do not load the folder before upload")
    parser.add_argument(
        "--vision-tower-id",
        default=None,
        help="Hub id written as mm_vision_tower when the checkpoint records a local CLIP folder "
        "(default: the id that folder records, e.g. its Hub-cache name)",
    )
    return parser


def release(args: argparse.Namespace) -> Path:
    """The whole release of ``args``; returns the folder that was (or would be) uploaded."""
    if args.repo_id.count("/") != 1 or not all(args.repo_id.split("/")):
        raise ReleaseError(f"--repo-id {args.repo_id!r} must be user/name")
    folder = Path(args.model_path).expanduser()
    kind, config = inspect_checkpoint(folder)
    base = base_model_of(kind, config, args.model_base)
    if kind != "full" and not base:
        raise ReleaseError(
            f"{folder} is a {kind} checkpoint: pass --model-base with the base LLM it was trained on"
        )
    tower = release_tower(config, folder, args.vision_tower_id)
    if tower is not None:
        print(f"mm_vision_tower {config.get('mm_vision_tower')} -> {tower} in the published config.json")
        config = {**config, "mm_vision_tower": tower}
    results_path = Path(args.results)
    results = read_results(results_path, args.results_row)
    card = build_card(
        args.repo_id,
        kind,
        config,
        folder,
        base,
        results,
        results_path,
        args.data,
        args.license or guess_license(base),
    )
    if args.in_place:
        target = folder
        (folder / "README.md").write_text(card)
    else:
        staging = (
            Path(args.staging_dir) if args.staging_dir else Path(tempfile.mkdtemp(prefix="llava-release-"))
        )
        target = stage(folder, staging, card)
    print(f"Model card written to {target / 'README.md'}")
    if not args.skip_load_check:  # with the local tower: this machine may not reach the Hub
        check_loadable(target if tower is None else folder, base if kind != "full" else None)
        print(f"{target} loads with load_pretrained_model ({kind} checkpoint)")
    if tower is not None:
        write_config(target, config)
    files = release_files(target) + [Path("README.md")]
    if args.dry_run:
        print(f"Dry run: would create {args.repo_id} ({'private' if args.private else 'public'}) and upload:")
        print(list_files(target, files))
        return target
    try:
        url = upload(target, files, args.repo_id, args.private, args.token)
    finally:
        if not args.in_place and not args.staging_dir:
            shutil.rmtree(target, ignore_errors=True)
    print(f"Uploaded {len(files)} files to {url}")
    return target


def main(argv: list[str] | None = None, prog: str = "python -m llava.hub") -> int:
    """Command-line entry point; returns the exit status (0, or 2 with one ``error:`` line on stderr)."""
    args = build_parser(prog).parse_args(argv)
    try:
        release(args)
    except ReleaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
