"""The quickstart pipeline: data, vision tower, tokenizer and LLM, projector pretraining, LoRA finetuning
with PruMerge+, evaluation of five reducers, summaries and pictures, all under one output folder.

Every stage leaves a file that marks it done (the tower's ``pretrain_log.json``, the base LLM's
``config.json``, ``mm_projector.bin``, the LoRA adapter; answer files are resumed line by line); a second run
with the same settings reuses those stages. Training goes through ``scripts/v1_5/pretrain.sh`` and
``scripts/v1_5/finetune_lora_prumerge_plus.sh`` (the DeepSpeed launcher and ``llava/train/train_mem.py``),
with the published flags overridden for a small CPU run; evaluation goes through the benchmark runners
and scorers (``llava.eval.model_vqa_loader``, ``model_vqa_science``, ``eval_pope``, ``eval_science_qa``,
``eval_textvqa``).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llava.quickstart.data import MANIFEST_VERSION, POPE_ID_OFFSETS, DatasetPaths, generate_dataset
from llava.quickstart.tower import TowerConfig

# The quickstart trains through the repository's published scripts (and the llava/train/train_mem.py they
# launch), which live beside the package in a clone: see check_training_scripts.
REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "scripts" / "v1_5"
TRAINING_SCRIPTS = ("pretrain.sh", "finetune_lora_prumerge_plus.sh")
#: Reducers evaluated; ``sequential`` and ``spatial`` get PruMerge's mean token count as their budget.
METHODS = ("none", "prumerge", "prumerge_plus", "sequential", "spatial")


@dataclass(frozen=True)
class QuickstartConfig:
    """Sizes and schedule of one quickstart run (``full`` and ``reduced`` presets below)."""

    n_train: int = 2400
    n_eval: int = 150
    tower: TowerConfig = field(default_factory=lambda: TowerConfig(epochs=2))
    # A 2-layer, width-64 LLM: each finetuning step is cheap, so the run affords ~770 of them; questions that
    # look something up in the image were learned only after several hundred steps at any width tried (and,
    # with LoRA, only "What colour is the circle?": presence stayed at chance through 2,500 LoRA steps).
    llm_hidden: int = 64
    llm_layers: int = 2
    llm_heads: int = 4
    vocab_size: int = 800
    llm_text_epochs: int = 3
    llm_text_lr: float = 1e-3
    pretrain_epochs: float = 1.0
    pretrain_lr: float = 1e-3
    finetune_epochs: float = 5.0
    finetune_lr: float = 2e-3
    #: The LR stays up after warm-up: with full finetuning of this LLM, presence answers were learned in a late
    #: jump (after ~600 steps) that the published cosine decay damped just when it would come.
    finetune_schedule: str = "constant_with_warmup"
    lora_r: int = 32
    lora_alpha: int = 64
    batch_size: int = 16
    eval_batch_size: int = 32
    visualise: int = 4
    seed: int = 0

    def fingerprint(self) -> dict[str, Any]:
        """The settings and the dataset's format version (stored in ``quickstart.json``)."""
        return {**asdict(self), "data_version": MANIFEST_VERSION}


PRESETS: dict[str, QuickstartConfig] = {
    "full": QuickstartConfig(),
    "reduced": QuickstartConfig(
        n_train=64,
        n_eval=12,
        tower=TowerConfig(epochs=1, hidden_size=64, num_layers=3),
        llm_hidden=64,
        llm_layers=2,
        vocab_size=600,
        finetune_epochs=1.0,
        lora_r=8,
        lora_alpha=16,
        visualise=2,
    ),
}


class StageError(RuntimeError):
    """A stage failed; the message names the stage and its log file."""


def check_training_scripts(scripts: Path | None = None) -> None:
    """Fails unless the published training scripts are next to the package (``scripts/v1_5`` of a clone).

    ``pip install`` without ``-e`` copies only the ``llava`` package, not ``scripts/``, so the quickstart
    can only run from a clone of the repository.

    Raises:
        StageError: a script is missing; the message names it and how to get it.
    """
    scripts = SCRIPTS if scripts is None else scripts
    missing = [name for name in TRAINING_SCRIPTS if not (scripts / name).is_file()]
    if missing:
        raise StageError(
            f"the quickstart trains through the repository's published scripts, and {scripts / missing[0]} "
            "was not found next to the llava package (it was installed without the repository's scripts/, "
            "e.g. by `pip install` without -e). Run it from a clone of the repository: clone it, "
            "`pip install -e .` in it, then `python -m llava.quickstart` (or `bash scripts/quickstart.sh`)."
        )


@dataclass
class Layout:
    """Where every stage writes, below the output folder."""

    root: Path

    @property
    def data(self) -> DatasetPaths:
        return DatasetPaths.under(self.root / "data")

    @property
    def tower(self) -> Path:
        return self.root / "vision_tower"

    @property
    def base(self) -> Path:
        return self.root / "base-llm"

    @property
    def pretrain(self) -> Path:
        return self.root / "checkpoints" / "pretrain"

    @property
    def finetune(self) -> Path:
        return self.root / "checkpoints" / "lora-prumerge-plus"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pictures(self) -> Path:
        return self.root / "kept_tokens"


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


def stage_tokenizer_and_llm(
    layout: Layout, cfg: QuickstartConfig, echo: Callable[[str], None] = print
) -> None:
    """A tokenizer trained on the dataset's texts and a small random Llama (the "base LLM")."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from llava.tokenizer_train import train_sentencepiece_tokenizer

    data = layout.data
    texts = []
    for path in (data.train, data.pretrain, data.sqa_questions):
        for record in json.loads(path.read_text(encoding="utf-8")):
            texts += [turn["value"].replace("<image>", "") for turn in record["conversations"]]
    for path in (data.pope_questions, data.vqa_questions):
        texts += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    tokenizer = train_sentencepiece_tokenizer(texts, layout.base, vocab_size=cfg.vocab_size)
    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.llm_hidden,
        intermediate_size=round(cfg.llm_hidden * 8 / 3 / 16) * 16,
        num_hidden_layers=cfg.llm_layers,
        num_attention_heads=cfg.llm_heads,
        num_key_value_heads=cfg.llm_heads,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    if cfg.llm_text_epochs > 0:
        pretrain_text(model, tokenizer, text_conversations(data.train), cfg, echo)
    model.save_pretrained(layout.base)


def text_conversations(train_json: Path) -> list[str]:
    """The training conversations as ``vicuna_v1`` text, without their images (the LLM's text corpus).

    Rendered as training renders them (:func:`llava.train.data.render`).
    """
    from llava.conversation import get_conv_template
    from llava.train.data import render

    template = get_conv_template("vicuna_v1")
    texts = []
    for record in json.loads(train_json.read_text(encoding="utf-8")):
        turns = [
            {**turn, "value": turn["value"].replace("<image>\n", "").replace("<image>", "")}
            for turn in record["conversations"]
        ]
        texts.append(render(turns, template)[0])
    return texts


def pretrain_text(
    model: Any, tokenizer: Any, texts: list[str], cfg: QuickstartConfig, echo: Callable[[str], None] = print
) -> None:
    """Language-model pretraining of the small Llama on ``texts`` (what Vicuna brings to LLaVA: a model that
    already speaks the prompts' language and answer formats, though it has never seen an image)."""
    import torch

    torch.manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.llm_text_lr, weight_decay=0.0)
    model.train()
    batch = 32
    for epoch in range(cfg.llm_text_epochs):
        order = torch.randperm(len(texts)).tolist()
        losses = []
        for start in range(0, len(order), batch):
            enc = tokenizer(
                [texts[i] for i in order[start : start + batch]], return_tensors="pt", padding=True
            )
            labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
            loss = model(**enc, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        echo(
            f"    text pretraining epoch {epoch + 1}/{cfg.llm_text_epochs}: loss {sum(losses) / len(losses):.3f}"
        )
    model.eval()


def free_port() -> int:
    """An unused local TCP port for the DeepSpeed launcher."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_logged(command: list[str], env: dict[str, str], log: Path, echo: Callable[[str], None]) -> None:
    """Runs ``command``, writing its output to ``log`` and echoing the trainer's loss lines.

    Raises:
        StageError: non-zero exit; the message holds the log's last lines and its path.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    tail: list[str] = []
    with log.open("w", encoding="utf-8") as sink:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.write(line)
            tail = (tail + [line.rstrip()])[-30:]
            if "'loss'" in line or "train_runtime" in line:
                echo("    " + line.strip().removeprefix("[rank0]: "))
        code = proc.wait()
    if code != 0:
        raise StageError(
            f"{' '.join(command[:2])} failed (exit {code}); last lines of {log}:\n" + "\n".join(tail)
        )


def training_env(layout: Layout) -> dict[str, str]:
    """Environment of the training scripts: paths, one process on the CPU (or the visible GPUs)."""
    data = layout.data
    return {
        **os.environ,
        "PYTHON": sys.executable,
        "MODEL_BASE": str(layout.base),
        "VISION_TOWER": str(layout.tower),
        "IMAGE_FOLDER": str(data.images),
        "MASTER_PORT": str(free_port()),
        "REPORT_TO": "none",
        "NUM_GPUS": os.environ.get("NUM_GPUS", "1"),
        # the launched train_mem.py imports this package even when it is not installed
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }


def small_run_flags(cfg: QuickstartConfig, epochs: float, lr: float) -> list[str]:
    """Flags appended to a published script (the last value of a flag wins) for a small CPU run."""
    return [
        "--bf16",
        "False",
        "--tf32",
        "False",
        "--gradient_checkpointing",
        "False",
        "--dataloader_num_workers",
        "0",
        "--gradient_accumulation_steps",
        "1",
        "--per_device_train_batch_size",
        str(cfg.batch_size),
        "--num_train_epochs",
        str(epochs),
        "--learning_rate",
        str(lr),
        "--warmup_ratio",
        "0.05",
        "--save_strategy",
        "no",
        "--logging_steps",
        "10",
        "--model_max_length",
        "512",
        "--seed",
        str(cfg.seed),
        "--disable_tqdm",
        "True",
    ]


def stage_pretrain(layout: Layout, cfg: QuickstartConfig, echo: Callable[[str], None]) -> None:
    """Projector pretraining on the captions with ``scripts/v1_5/pretrain.sh`` (LLM and tower frozen)."""
    env = {
        **training_env(layout),
        "DATA_PATH": str(layout.data.pretrain),
        "OUTPUT_DIR": str(layout.pretrain),
        "PER_DEVICE_BATCH": str(cfg.batch_size),
    }
    flags = small_run_flags(cfg, cfg.pretrain_epochs, cfg.pretrain_lr)
    run_logged(["bash", str(SCRIPTS / "pretrain.sh"), *flags], env, layout.logs / "pretrain.log", echo)


def stage_finetune(layout: Layout, cfg: QuickstartConfig, echo: Callable[[str], None]) -> None:
    """LoRA finetuning with PruMerge+ in the loop: ``scripts/v1_5/finetune_lora_prumerge_plus.sh``."""
    env = {
        **training_env(layout),
        "DATA_PATH": str(layout.data.train),
        "OUTPUT_DIR": str(layout.finetune),
        "PRETRAIN_MM_MLP_ADAPTER": str(layout.pretrain / "mm_projector.bin"),
        "PER_DEVICE_BATCH": str(cfg.batch_size),
        "LEARNING_RATE": str(cfg.finetune_lr),
    }
    flags = small_run_flags(cfg, cfg.finetune_epochs, cfg.finetune_lr) + [
        "--lora_r",
        str(cfg.lora_r),
        "--lora_alpha",
        str(cfg.lora_alpha),
        "--mm_projector_lr",
        str(cfg.finetune_lr),
        "--lr_scheduler_type",
        cfg.finetune_schedule,
    ]
    script = SCRIPTS / "finetune_lora_prumerge_plus.sh"
    run_logged(["bash", str(script), *flags], env, layout.logs / "finetune.log", echo)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def _quiet(func: Callable[[list[str]], Any], argv: list[str], log: Path) -> Any:
    """Calls a runner or scorer ``main(argv)`` with its stdout and stderr appended to ``log``."""
    import contextlib

    log.parent.mkdir(parents=True, exist_ok=True)
    with (
        log.open("a", encoding="utf-8") as sink,
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        return func(argv)


def spatial_budget(budget: int, side: int) -> int:
    """The token count nearest ``budget`` that an ``r x c`` lattice (r, c <= ``side``) holds, near-square first.

    The ``spatial`` reducer lays its budget out as a near-square grid, so a prime budget such as 19 would be a
    1 x 19 row; 20 (4 x 5) is used instead.
    """
    grids = [(r, c) for r in range(1, side + 1) for c in range(r, side + 1)]
    r, c = min(grids, key=lambda g: (abs(g[0] * g[1] - budget), g[1] - g[0]))
    return r * c


def reduction_flags(method: str, budget: int | None, side: int) -> list[str]:
    """``--token-reduction`` flags of one evaluated reducer (``side``: patches per row of the tower)."""
    flags = ["--token-reduction", method]
    if method in ("sequential", "spatial"):
        if budget is None:
            raise ValueError(f"{method} needs PruMerge's token count first")
        flags += ["--reduction-budget", str(spatial_budget(budget, side) if method == "spatial" else budget)]
    return flags


def cli_flags(**options: Any) -> list[str]:
    """``--name value`` pairs of ``options`` (underscores become dashes; ``True`` is a bare flag)."""
    argv: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def answer_benchmarks(
    layout: Layout, cfg: QuickstartConfig, method: str, budget: int | None, echo: Callable[[str], None]
) -> dict[str, Path]:
    """Runs the three benchmarks' runners for ``method``; returns their answer files (resumed if present)."""
    from llava.eval import model_vqa_loader, model_vqa_science

    data, out = layout.data, layout.eval / method
    common = cli_flags(
        model_path=layout.finetune,
        model_base=layout.base,
        temperature=0,
        conv_mode="vicuna_v1",
        batch_size=cfg.eval_batch_size,
        device="cpu",
    ) + reduction_flags(method, budget, cfg.tower.image_size // cfg.tower.patch_size)
    answers = {"pope": out / "pope.jsonl", "sqa": out / "sqa.jsonl", "vqa": out / "vqa.jsonl"}
    files = {"image_folder": data.images}
    runs = [
        (
            model_vqa_loader.main,
            cli_flags(
                question_file=data.pope_questions, answers_file=answers["pope"], max_new_tokens=4, **files
            ),
        ),
        (
            model_vqa_science.main,
            cli_flags(
                question_file=data.sqa_questions,
                answers_file=answers["sqa"],
                single_pred_prompt=True,
                max_new_tokens=4,
                **files,
            ),
        ),
        (
            model_vqa_loader.main,
            cli_flags(
                question_file=data.vqa_questions, answers_file=answers["vqa"], max_new_tokens=6, **files
            ),
        ),
    ]
    for (func, argv), name in zip(runs, answers):
        started = time.time()
        code = _quiet(func, argv + common, layout.logs / f"eval_{method}.log")
        if code != 0:
            raise StageError(
                f"evaluating {method} on {name} failed; see {layout.logs / f'eval_{method}.log'}"
            )
        echo(f"    {method:<14} {name:<5} answered ({time.time() - started:.0f} s)")
    return answers


def score(layout: Layout, answers: dict[str, Path]) -> dict[str, Any]:
    """POPE, ScienceQA and VQA (TextVQA's scorer) figures of one reducer, plus per-type accuracies."""
    from llava.eval import eval_pope, eval_science_qa, eval_textvqa
    from llava.eval.io import read_jsonl
    from llava.eval.m4c_evaluator import TextVQAAccuracyEvaluator

    data = layout.data
    log = layout.logs / "scores.log"
    pope = _quiet(
        eval_pope.main,
        [
            "--annotation-dir",
            str(data.pope_labels),
            "--question-file",
            str(data.pope_questions),
            "--result-file",
            str(answers["pope"]),
        ],
        log,
    )
    sqa_out = answers["sqa"].with_suffix("")
    sqa = _quiet(
        eval_science_qa.main,
        [
            "--base-dir",
            str(data.sqa_dir),
            "--result-file",
            str(answers["sqa"]),
            "--output-file",
            f"{sqa_out}_output.json",
            "--output-result",
            f"{sqa_out}_result.json",
        ],
        log,
    )
    vqa = _quiet(
        eval_textvqa.main,
        ["--annotation-file", str(data.vqa_annotations), "--result-file", str(answers["vqa"])],
        log,
    )
    categories = {q["question_id"]: q["category"] for q in read_jsonl(data.vqa_questions)}
    truth = json.loads(data.vqa_answers.read_text(encoding="utf-8"))
    by_type: dict[str, list[dict]] = {}
    for row in read_jsonl(answers["vqa"]):  # ten copies of the one answer, as in the annotation file
        qid = row["question_id"]
        by_type.setdefault(categories[qid], []).append(
            {"pred_answer": row["text"], "gt_answers": [truth[str(qid)]] * 10}
        )
    evaluator = TextVQAAccuracyEvaluator()
    tokens = [row["num_visual_tokens"] for row in read_jsonl(answers["pope"])]
    return {
        "pope_f1": pope["mean_f1_percent"],
        "pope_acc": pope["mean_accuracy_percent"],
        "sqa_acc": sqa["img_accuracy_percent"],
        "vqa_acc": vqa["soft_accuracy_percent"],
        **{f"vqa_{k}_acc": 100 * evaluator.eval_pred_list(v) for k, v in sorted(by_type.items())},
        "visual_tokens": sum(tokens) / len(tokens),
    }


def pope_items(data: DatasetPaths) -> list[tuple[str, str, bool]]:
    """(image, question text, label is "yes") for every POPE question (labels matched by position, as POPE)."""
    from llava.eval.io import read_jsonl

    labels = {
        category: [
            row["label"] == "yes" for row in read_jsonl(data.pope_labels / f"coco_pope_{category}.json")
        ]
        for category in POPE_ID_OFFSETS
    }
    return [
        (q["image"], q["text"], labels[q["category"]][q["question_id"] - POPE_ID_OFFSETS[q["category"]] - 1])
        for q in read_jsonl(data.pope_questions)
    ]


def rank_auc(positives: list[float], negatives: list[float]) -> float:
    """Area under the ROC curve of scores (Mann-Whitney U / (n_pos * n_neg), ties count one half)."""
    if not positives or not negatives:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def presence_margins(layout: Layout, cfg: QuickstartConfig) -> dict[str, Any]:
    """How much the finetuned model's yes/no on POPE questions depends on the image (threshold-free).

    For every POPE question, the log-probability margin ``log P(Yes) - log P(No)`` of the first answer token
    (all visual tokens, teacher-forced prompt as the runner builds it), once with the image and once with the
    question alone. ``auc`` is the ROC area of the margin against the labels: 0.5 means the answer does not
    separate present from absent objects, whatever threshold greedy decoding happens to use.
    """
    import torch

    from llava.mm_utils import load_image, process_images
    from llava.model.loader import load_pretrained_model
    from llava.prompting import left_pad, pad_token_id, prompt_ids

    tokenizer, model, processor, _ = load_pretrained_model(
        str(layout.finetune), str(layout.base), device="cpu", token_reduction="none"
    )
    yes, no = (tokenizer(word, add_special_tokens=False).input_ids[0] for word in ("Yes", "No"))
    items = pope_items(layout.data)
    result: dict[str, Any] = {"questions": len(items)}
    for with_image in (True, False):
        margins = []
        for start in range(0, len(items), cfg.eval_batch_size):
            chunk = items[start : start + cfg.eval_batch_size]
            ids = [prompt_ids(tokenizer, text, "vicuna_v1", image=with_image) for _, text, _ in chunk]
            input_ids, mask = left_pad(ids, pad_token_id(tokenizer))
            if with_image:
                images = [load_image(layout.data.images / name) for name, _, _ in chunk]
                pixels = process_images(images, processor, model.config.image_aspect_ratio)
            else:
                pixels = torch.zeros(0, 3, 1, 1)
            with torch.no_grad():
                spliced = model.prepare_multimodal_inputs(input_ids, mask, pixels, padding_side="left")
                logits = model(
                    inputs_embeds=spliced.inputs_embeds,
                    attention_mask=spliced.attention_mask,
                    position_ids=spliced.position_ids,
                    logits_to_keep=1,
                ).logits[:, -1]
            logp = logits.float().log_softmax(-1)
            margins += (logp[:, yes] - logp[:, no]).tolist()
        positives = [m for m, (_, _, label) in zip(margins, items) if label]
        negatives = [m for m, (_, _, label) in zip(margins, items) if not label]
        key = "with_image" if with_image else "text_only"
        result[key] = {
            "auc": rank_auc(positives, negatives),
            "mean_margin_present": statistics.fmean(positives) if positives else float("nan"),
            "mean_margin_absent": statistics.fmean(negatives) if negatives else float("nan"),
        }
    return result


def kept_vs_objects(layout: Layout, answers: Path) -> dict[str, Any]:
    """Pearson correlation of each eval image's kept-token count with its number of objects."""
    from llava.eval.io import read_jsonl

    meta = json.loads(layout.data.eval_meta.read_text(encoding="utf-8"))
    images = {q["question_id"]: q["image"] for q in read_jsonl(layout.data.pope_questions)}
    kept: dict[str, int] = {}
    for row in read_jsonl(answers):
        kept[images[row["question_id"]]] = row["num_visual_tokens"]
    pairs = [(meta[name]["n_objects"], count) for name, count in sorted(kept.items())]
    by_objects: dict[int, list[int]] = {}
    for n, count in pairs:
        by_objects.setdefault(n, []).append(count)
    return {
        "images": len(pairs),
        "pearson_r": pearson([float(n) for n, _ in pairs], [float(c) for _, c in pairs]),
        "mean_kept_by_objects": {str(n): sum(v) / len(v) for n, v in sorted(by_objects.items())},
    }


def pearson(xs: list[float], ys: list[float]) -> float:
    """Pearson's r, NaN when it is undefined (fewer than two points, or a constant list)."""
    try:
        return statistics.correlation(xs, ys)
    except statistics.StatisticsError:
        return float("nan")


def draw_kept_tokens(layout: Layout, cfg: QuickstartConfig) -> list[str]:
    """The visualiser's pictures (PruMerge and PruMerge+) for the first few evaluation images."""
    from llava.visualize import main as visualise

    meta = json.loads(layout.data.eval_meta.read_text(encoding="utf-8"))
    names = sorted(meta)[: cfg.visualise]
    files = [str(layout.data.images / name) for name in names]
    written = []
    for method in ("prumerge", "prumerge_plus"):
        folder = layout.pictures / method
        argv = [
            "--model-path",
            str(layout.finetune),
            "--model-base",
            str(layout.base),
            "--image-file",
            *files,
            "--token-reduction",
            method,
            "--out-dir",
            str(folder),
            "--scale",
            "2",
        ]
        if _quiet(visualise, argv, layout.logs / "visualize.log") != 0:
            raise StageError(f"the visualiser failed; see {layout.logs / 'visualize.log'}")
        written += sorted(str(p.relative_to(layout.root)) for p in folder.glob("*.png"))
    return written


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

#: Chance level of each reported accuracy (POPE is balanced yes/no; ScienceQA-style items have three
#: options; counts are 1-6 and colours one of six).
CHANCE = {"pope_acc": 50.0, "sqa_acc": 100 / 3, "vqa_count_acc": 100 / 6, "vqa_colour_acc": 100 / 6}


def check_settings(layout: Layout, cfg: QuickstartConfig) -> None:
    """Records the settings in ``quickstart.json``; refuses a folder made with other settings."""
    path = layout.root / "quickstart.json"
    wanted = json.loads(json.dumps(cfg.fingerprint()))
    if path.is_file():
        recorded = json.loads(path.read_text(encoding="utf-8")).get("settings")
        if recorded != wanted:
            raise StageError(
                f"{layout.root} holds a quickstart run with other settings ({path}); pass another --output-dir "
                "or remove that folder to start again."
            )
        return
    layout.root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": wanted}, indent=2) + "\n", encoding="utf-8")


def markdown_tables(results: dict[str, dict[str, Any]], budget: int) -> tuple[str, str]:
    """Table 1-style (none / PruMerge / PruMerge+) and Table 4-style (at PruMerge's count) summaries."""
    head = (
        "| method | visual tokens | POPE F1 | POPE acc | SQA-IMG | VQA | VQA count | VQA colour |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )

    def row(name: str, label: str) -> str:
        r = results[name]
        cells = [
            r["visual_tokens"],
            r["pope_f1"],
            r["pope_acc"],
            r["sqa_acc"],
            r["vqa_acc"],
            r.get("vqa_count_acc", float("nan")),
            r.get("vqa_colour_acc", float("nan")),
        ]
        return f"| {label} | " + " | ".join(f"{c:.1f}" for c in cells) + " |\n"

    chance = (
        f"| chance | | | {CHANCE['pope_acc']:.1f} | {CHANCE['sqa_acc']:.1f} | | {CHANCE['vqa_count_acc']:.1f} "
        f"| {CHANCE['vqa_colour_acc']:.1f} |\n"
    )
    table1 = head + row("none", "LLaVA (all tokens)") + row("prumerge", "+ PruMerge")
    table1 += row("prumerge_plus", "+ PruMerge+") + chance
    table4 = head + row("prumerge", "PruMerge (adaptive)") + row("sequential", f"sequential ({budget})")
    table4 += row("spatial", f"spatial ({round(results['spatial']['visual_tokens'])}, nearest grid)")
    return table1, table4


def run_quickstart(
    output_dir: str | Path, cfg: QuickstartConfig, echo: Callable[[str], None] = print
) -> dict:
    """Runs (or resumes) every stage under ``output_dir``; returns the summary (also ``summary.json``)."""
    from transformers.utils import logging as hf_logging

    check_training_scripts()  # before anything is written
    hf_logging.set_verbosity_error()  # the LoRA base's load report (no projector in a plain Llama) is expected
    layout = Layout(Path(output_dir).resolve())
    check_settings(layout, cfg)
    echo(f"[quickstart] output folder: {layout.root}")
    started = time.time()
    timings = run_training_stages(layout, cfg, echo, started)
    echo("[quickstart] 6/6 evaluation (POPE, ScienceQA, VQA) of " + ", ".join(METHODS))
    t0 = time.time()
    results, answers, budget = evaluate_methods(layout, cfg, echo)
    timings["6/6 evaluation"] = time.time() - t0
    correlation = kept_vs_objects(layout, answers["prumerge"]["pope"])
    summary = {
        "output_dir": str(layout.root),
        "settings": cfg.fingerprint(),
        "results": results,
        "chance": CHANCE,
        "prumerge_budget_for_table4": budget,
        "kept_tokens_vs_objects": correlation,
        "pope_margin_auc": presence_margins(layout, cfg),
        "tower_pretraining": json.loads((layout.tower / "pretrain_log.json").read_text(encoding="utf-8"))[
            "epochs"
        ][-1],
        "pictures": draw_kept_tokens(layout, cfg),
        "seconds": timings,
        "total_seconds": time.time() - started,
    }
    (layout.root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    text = summary_markdown(summary)
    (layout.root / "summary.md").write_text(text, encoding="utf-8")
    echo("\n" + text)
    echo(f"[quickstart] finished in {summary['total_seconds']:.0f} s; everything is under {layout.root}")
    return summary


def run_training_stages(
    layout: Layout, cfg: QuickstartConfig, echo: Callable[[str], None], started: float
) -> dict[str, float]:
    """Stages 1-5 (data, tower, base LLM, projector, LoRA), each skipped when its output is there; their times."""
    from llava.model.loader import checkpoint_kind
    from llava.quickstart.tower import pretrain_tower

    timings: dict[str, float] = {}

    def stage(name: str, done: bool, action: Callable[[], Any]) -> None:
        if done:
            echo(f"[quickstart] {name}: reusing what is there")
            return
        echo(f"[quickstart] {name} ...")
        t0 = time.time()
        action()
        timings[name] = time.time() - t0
        echo(f"[quickstart] {name}: done in {timings[name]:.0f} s (total {time.time() - started:.0f} s)")

    tower_cfg = cfg.tower
    stage(
        "1/6 synthetic dataset",
        False,
        lambda: generate_dataset(
            layout.root / "data", cfg.n_train, cfg.n_eval, tower_cfg.image_size, cfg.seed
        ),
    )
    stage(
        "2/6 vision tower pretraining",
        (layout.tower / "pretrain_log.json").is_file(),
        lambda: pretrain_tower(layout.root / "data", layout.tower, tower_cfg, lambda m: echo("    " + m)),
    )
    stage(
        "3/6 tokenizer and base LLM (text pretraining)",
        (layout.base / "config.json").is_file(),
        lambda: stage_tokenizer_and_llm(layout, cfg, echo),
    )
    stage(
        "4/6 projector pretraining (scripts/v1_5/pretrain.sh)",
        (layout.pretrain / "mm_projector.bin").is_file(),
        lambda: stage_pretrain(layout, cfg, echo),
    )
    finetuned = layout.finetune.is_dir() and checkpoint_kind(layout.finetune) == "lora"
    stage(
        "5/6 LoRA finetuning with PruMerge+ (scripts/v1_5/finetune_lora_prumerge_plus.sh)",
        finetuned,
        lambda: stage_finetune(layout, cfg, echo),
    )
    return timings


def evaluate_methods(layout: Layout, cfg: QuickstartConfig, echo: Callable[[str], None]):
    """Every method of :data:`METHODS` answered and scored; the sampling baselines at PruMerge's mean count.

    Returns:
        ``(results by method, answer files by method and benchmark, PruMerge's mean token count)``.
    """
    results: dict[str, dict[str, Any]] = {}
    answers: dict[str, dict[str, Path]] = {}
    budget: int | None = None
    for method in METHODS:
        answers[method] = answer_benchmarks(layout, cfg, method, budget, echo)
        results[method] = score(layout, answers[method])
        if method == "prumerge":
            budget = max(1, round(results[method]["visual_tokens"]))
    assert budget is not None
    return results, answers, budget


def summary_markdown(summary: dict[str, Any]) -> str:
    """The quickstart's ``summary.md``: its Table 1 and Table 4, the kept-token correlation and POPE's AUC."""
    budget, correlation, presence = (
        summary["prumerge_budget_for_table4"],
        summary["kept_tokens_vs_objects"],
        summary["pope_margin_auc"],
    )
    table1, table4 = markdown_tables(summary["results"], budget)
    by_objects = ", ".join(f"{n}: {v:.1f}" for n, v in correlation["mean_kept_by_objects"].items())
    return (
        "## Table 1 (synthetic shapes; accuracies in %)\n\n"
        + table1
        + f"\n## Table 4: PruMerge vs. sampling at PruMerge's mean token count ({budget})\n\n"
        + table4
        + f"\nPruMerge's kept tokens vs. objects per image: Pearson r = {correlation['pearson_r']:.2f} over "
        f"{correlation['images']} images (mean kept by object count: {by_objects})\n"
        + f"\nPOPE, threshold-free (log P(Yes) - log P(No) of the first answer token, all tokens): ROC AUC "
        f"{presence['with_image']['auc']:.2f} with the image, {presence['text_only']['auc']:.2f} from the question "
        "alone (0.5: present and absent objects not separated)\n"
        + "\nKept-token pictures: "
        + ", ".join(summary["pictures"])
        + "\n"
    )
