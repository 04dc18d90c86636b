"""Training-step benchmark: LoRA steps of LLaVA-1.5 with each visual-token reducer.

The model is an in-memory ``LlavaLlamaForCausalLM`` with **random weights** (no files are read):

* ``--shape 7b``: Vicuna-7B shapes (hidden 4096, 32 layers, 32 heads, intermediate 11008, vocab
  32000), the CLIP ViT-L/14-336 tower (24 layers, width 1024, 16 heads) and the ``mlp2x_gelu``
  projector. Only sensible on a GPU.
* ``--shape small`` (default): a scaled-down Llama (hidden 512, 4 layers, 8 heads, intermediate
  1376, vocab 32000) and a tower with ViT-L/14-336's geometry (24 layers, 336 px, 14 px patches, so
  576 patch tokens) at width 256, so the reducers keep realistic numbers of tokens.

As in ``bench_tower.py``, every tower layer's ``q_proj``/``k_proj`` weights are multiplied by
``--qk-scale`` (8) so the class attention is peaky and PruMerge finds outliers.

The step is the LoRA finetuning step of ``llava.train.train``: ``add_lora`` on every Linear of the
language model (r=128, alpha=256 for 7b; r=16, alpha=32 for small), projector trainable, tower
frozen, AdamW, train mode, gradient checkpointing on for 7b (as upstream's LoRA script). The batch is
random pixels plus a vicuna_v1-shaped prompt of random token ids (system prompt, ``USER: <image>\\n``,
a 40-token question, ``ASSISTANT:``, a 20-token answer and ``</s>``, labels on the answer only).

For ``none``, ``prumerge/reference`` and ``prumerge_plus/reference/adaptive``: ``--warmup`` untimed
optimizer steps, then ``--steps`` timed ones (forward, backward, ``optimizer.step``, ``zero_grad``).
Reported: median step time, training tokens per second (spliced LLM tokens x batch / step time),
visual tokens per image, and peak memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: process
RSS of a fresh process per reducer,
sampled by a background thread over its steps; see the JSON's ``memory_measure``).

Usage::

    python benchmarks/bench_train.py                                   # CPU, small shape
    python benchmarks/bench_train.py --shape 7b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import torch

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.model import LlavaConfig, LlavaLlamaForCausalLM
from llava.tiny import llava_mm_fields, tiny_clip_config
from llava.train.train import add_lora

# run as a script (python benchmarks/bench_train.py), this folder is sys.path[0]; imported as
# benchmarks.bench_train (the tests), the siblings are in the benchmarks package
if __package__:
    from .bench_tower import DTYPES, describe, machine_info, token_stats
else:
    from bench_tower import DTYPES, describe, machine_info, token_stats

#: Reducer settings compared, as ``mm_token_reduction`` dicts.
METHODS: list[dict[str, Any]] = [
    {"method": "none"},
    {"method": "prumerge", "variant": "reference"},
    {"method": "prumerge_plus", "variant": "reference", "form": "adaptive"},
]

#: Language model and tower shapes of each ``--shape``.
SHAPES: dict[str, dict[str, Any]] = {
    "7b": {
        "llm": {
            "hidden_size": 4096,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "intermediate_size": 11008,
            "vocab_size": 32000,
        },
        "tower": {"hidden_size": 1024, "num_layers": 24, "num_heads": 16, "intermediate_size": 4096},
        "lora": {"r": 128, "alpha": 256},
    },
    "small": {
        "llm": {
            "hidden_size": 512,
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
            "intermediate_size": 1376,
            "vocab_size": 32000,
        },
        "tower": {"hidden_size": 256, "num_layers": 24, "num_heads": 4, "intermediate_size": 1024},
        "lora": {"r": 16, "alpha": 32},
    },
}

#: Token counts of the vicuna_v1 prompt pieces (the Llama tokenizer's lengths, approximately).
PROMPT_LAYOUT: dict[str, int] = {
    "bos": 1,
    "system": 34,  # "A chat between a curious user ... questions."
    "user_role": 3,  # " USER:"
    "image_newline": 1,  # "\n" after <image>
    "question": 40,
    "assistant_role": 5,  # " ASSISTANT:"
    "answer": 20,
    "eos": 1,  # "</s>", labelled like the answer
}


def build_model(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> LlavaLlamaForCausalLM:
    """The random LLaVA model of ``args.shape`` with LoRA, trainable projector and frozen tower."""
    shape = SHAPES[args.shape]
    tower = shape["tower"]
    vision_config = tiny_clip_config(
        hidden_size=tower["hidden_size"], num_layers=tower["num_layers"], num_heads=tower["num_heads"]
    )
    vision_config.intermediate_size = tower["intermediate_size"]
    config = LlavaConfig(
        **shape["llm"],
        num_key_value_heads=shape["llm"]["num_attention_heads"],
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        use_cache=False,
        vision_config=vision_config,
        mm_token_reduction={"method": "none"},
        **llava_mm_fields("random-clip-vit-large-patch14-336", tower["hidden_size"]),
    )
    torch.manual_seed(args.seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:  # initialise on the target device: a 7B model is slow to initialise on a CPU
            model = LlavaLlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.to(device=device, dtype=dtype)
    with torch.no_grad():
        for layer in model.get_vision_tower().vision_tower.encoder.layers:
            layer.self_attn.q_proj.weight.mul_(args.qk_scale)
            layer.self_attn.k_proj.weight.mul_(args.qk_scale)
    model.requires_grad_(True)
    model.get_vision_tower().requires_grad_(False)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lora_args = SimpleNamespace(
        lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.05, lora_bias="none"
    )
    model = add_lora(model, lora_args)
    model.base_model.model.get_model().mm_projector.requires_grad_(True)
    return model.train()


def make_batch(
    batch_size: int, vocab: int, image_size: int, device: torch.device, dtype: torch.dtype, seed: int
) -> dict[str, torch.Tensor]:
    """Random pixels and a vicuna_v1-shaped prompt of random token ids (labels on the answer and ``</s>``)."""
    generator = torch.Generator().manual_seed(seed)
    rows, label_rows = [], []
    for _ in range(batch_size):
        ids: list[int] = []
        labels: list[int] = []
        for piece, count in PROMPT_LAYOUT.items():
            if piece == "bos":
                chunk = [1]
            elif piece == "eos":
                chunk = [2]
            else:
                chunk = torch.randint(3, vocab, (count,), generator=generator).tolist()
            if piece == "image_newline":
                chunk = [IMAGE_TOKEN_INDEX, *chunk]
            ids += chunk
            labels += chunk if piece in ("answer", "eos") else [IGNORE_INDEX] * len(chunk)
        rows.append(ids)
        label_rows.append(labels)
    input_ids = torch.tensor(rows, device=device)
    pixels = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": torch.tensor(label_rows, device=device),
        "images": pixels.to(device=device, dtype=dtype),
    }


class RssSampler:
    """Samples the process RSS in a background thread and keeps the maximum."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self.peak = self.process.memory_info().rss
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


@contextlib.contextmanager
def measure_memory(device: torch.device) -> Iterator[dict[str, int]]:
    """Yields a dict filled on exit with ``baseline`` and ``peak`` bytes of the step."""
    result: dict[str, int] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        result["baseline"] = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        torch.cuda.synchronize(device)
        result["peak"] = torch.cuda.max_memory_allocated(device)
    else:
        sampler = RssSampler()
        result["baseline"] = sampler.process.memory_info().rss
        with sampler:
            yield result
        result["peak"] = sampler.peak


def train_step(model: Any, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> Any:
    """One optimizer step; returns the model output."""
    out = model(**batch)
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return out


def visual_tokens(out: Any, model: Any, images: torch.Tensor) -> torch.Tensor:
    """Visual tokens spliced per image: the output's ``num_visual_tokens``, else the tower's lengths."""
    counts = getattr(out, "num_visual_tokens", None)
    if counts is None:  # an output without the field: ask the tower (outside the timed step)
        with torch.no_grad():
            counts = model.get_vision_tower()(images).lengths
    return counts.detach().cpu()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_method(
    model: Any,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    reduction: dict[str, Any],
    args: argparse.Namespace,
    device: torch.device,
    log: Any,
) -> dict[str, Any]:
    """Warmup and timed steps with one reducer; returns its row."""
    inner = model.base_model.model
    inner.set_token_reduction(reduction)
    name = describe(reduction)
    times, peaks, deltas, losses, lengths, padded = [], [], [], [], [], []
    visual = None
    # CPU: one RSS window over warmup and timed steps (run in a fresh process, see run_cpu_isolated);
    # CUDA: the allocator's exact peak of each timed step.
    whole = measure_memory(device) if device.type == "cpu" else contextlib.nullcontext({})
    with whole as cpu_mem:
        for i in range(args.warmup):
            log(f"{name}: warmup step {i + 1}/{args.warmup} ...")
            train_step(model, optimizer, batch)
        for i in range(args.steps):
            step_mem = measure_memory(device) if device.type == "cuda" else contextlib.nullcontext({})
            with step_mem as mem:
                sync(device)
                t0 = time.perf_counter()
                out = train_step(model, optimizer, batch)
                sync(device)
                times.append(time.perf_counter() - t0)
            if mem:
                peaks.append(mem["peak"])
                deltas.append(mem["peak"] - mem["baseline"])
            losses.append(out.loss.item())
            visual = visual_tokens(out, inner, batch["images"])
            text = int(batch["attention_mask"].sum()) - int((batch["input_ids"] == IMAGE_TOKEN_INDEX).sum())
            lengths.append(text + int(visual.sum()))
            padded.append(out.logits.shape[0] * out.logits.shape[1])
            log(f"{name}: step {i + 1}/{args.steps} {times[-1]:.2f} s, loss {losses[-1]:.3f}")
            del out
    if cpu_mem:
        peaks.append(cpu_mem["peak"])
        deltas.append(cpu_mem["peak"] - cpu_mem["baseline"])
    step_s = statistics.median(times)
    tokens = statistics.median(lengths)
    return {
        "reduction": name,
        "mm_token_reduction": reduction,
        "step_s_median": round(step_s, 4),
        "step_s_all": [round(t, 4) for t in times],
        "llm_tokens_per_step": tokens,
        "llm_tokens_per_step_padded": statistics.median(padded),
        "tokens_per_s": round(tokens / step_s, 1),
        "samples_per_s": round(args.batch_size / step_s, 3),
        "visual_tokens_per_image": token_stats(visual),
        "peak_memory_mib": round(max(peaks) / 2**20, 1),
        "peak_memory_delta_mib": round(max(deltas) / 2**20, 1),
        "loss_all": [round(x, 4) for x in losses],
    }


def run_cpu_isolated(index: int, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    """Runs reducer ``METHODS[index]`` in a fresh process (so its RSS is its own) and returns its row."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--only", str(index), "--out", str(out)]
        for flag in (
            "shape",
            "device",
            "dtype",
            "batch_size",
            "steps",
            "warmup",
            "lr",
            "lora_r",
            "lora_alpha",
            "qk_scale",
            "seed",
        ):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        cmd.append(
            "--gradient-checkpointing" if args.gradient_checkpointing else "--no-gradient-checkpointing"
        )
        log(f"{describe(METHODS[index])}: in a fresh process ...")
        subprocess.run(cmd, check=True)
        return json.loads(out.read_text(encoding="utf-8"))["results"][0]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shape", choices=tuple(SHAPES), default=None, help="default: 7b on cuda, small on cpu"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--dtype", choices=tuple(DTYPES), default=None, help="default: float32 cpu, bfloat16 cuda"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default: 2 on cpu, 16 on cuda")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per reducer (3 cpu, 10 cuda)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per reducer")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--lora-r", type=int, default=None, help="default: 128 (7b), 16 (small)")
    parser.add_argument("--lora-alpha", type=int, default=None, help="default: 256 (7b), 32 (small)")
    parser.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="default: on for 7b (as upstream's LoRA script), off for small",
    )
    parser.add_argument(
        "--qk-scale", type=float, default=8.0, help="factor on every tower layer's q/k weights"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--out", type=Path, default=None, help="default: benchmarks/results/train_<device>.json"
    )
    args = parser.parse_args(argv)
    on_gpu = args.device == "cuda"
    if on_gpu and not torch.cuda.is_available():
        parser.error("--device cuda was asked for but torch sees no CUDA device.")
    args.shape = args.shape or ("7b" if on_gpu else "small")
    args.dtype = args.dtype or ("bfloat16" if on_gpu else "float32")
    args.batch_size = args.batch_size or (16 if on_gpu else 2)
    args.steps = args.steps or (10 if on_gpu else 3)
    args.lora_r = args.lora_r or SHAPES[args.shape]["lora"]["r"]
    args.lora_alpha = args.lora_alpha or SHAPES[args.shape]["lora"]["alpha"]
    if args.gradient_checkpointing is None:
        args.gradient_checkpointing = args.shape == "7b"
    if args.out is None:
        args.out = Path(__file__).resolve().parent / "results" / f"train_{args.device}.json"
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Builds the model and measures every reducer; returns the JSON-serialisable results."""
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", flush=True)

    machine = machine_info(device, args.dtype)
    log(f"building the {args.shape} model with random weights on {device} in {args.dtype} ...")
    model = build_model(args, device, dtype)
    inner = model.base_model.model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log(f"built: {total / 1e6:.1f} M parameters, {trainable / 1e6:.2f} M trainable")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    image_size = inner.get_vision_tower().config.image_size
    batch = make_batch(args.batch_size, inner.config.vocab_size, image_size, device, dtype, args.seed + 1)
    if args.only is not None:
        rows = [run_method(model, optimizer, batch, METHODS[args.only], args, device, log)]
    elif device.type == "cpu":
        del model, optimizer, batch
        rows = [run_cpu_isolated(index, args, log) for index in range(len(METHODS))]
    else:
        rows = [run_method(model, optimizer, batch, method, args, device, log) for method in METHODS]
    if device.type == "cuda":
        memory_measure = (
            "torch.cuda.max_memory_allocated over each timed step (after reset_peak_memory_stats); "
            "peak_memory_mib is the absolute peak (weights, optimizer state, activations), "
            "peak_memory_delta_mib the peak minus memory_allocated before the step"
        )
    else:
        memory_measure = (
            "each reducer runs in a fresh process (same seed, same model); its RSS (psutil) is sampled "
            "every 2 ms by a background thread over the warmup and timed steps; peak_memory_mib is the "
            "peak RSS of that process, peak_memory_delta_mib the peak minus the RSS before its first step "
            "(activations, gradients, AdamW state and allocator caching; the built model is in the baseline)"
        )
    tower_cfg = inner.get_vision_tower().config
    llm_cfg = inner.config
    return {
        "benchmark": "bench_train.py",
        "machine": machine,
        "config": {
            "shape": args.shape,
            "llm": {k: getattr(llm_cfg, k) for k in SHAPES[args.shape]["llm"]},
            "tower": {
                "hidden_size": tower_cfg.hidden_size,
                "num_hidden_layers": tower_cfg.num_hidden_layers,
                "num_attention_heads": tower_cfg.num_attention_heads,
                "intermediate_size": tower_cfg.intermediate_size,
                "image_size": tower_cfg.image_size,
                "patch_size": tower_cfg.patch_size,
            },
            "projector": llm_cfg.mm_projector_type,
            "attn_implementation": getattr(llm_cfg, "_attn_implementation", None),
            "parameters_m": round(total / 1e6, 2),
            "trainable_parameters_m": round(trainable / 1e6, 3),
            "lora": {"r": args.lora_r, "alpha": args.lora_alpha, "dropout": 0.05},
            "optimizer": f"AdamW(lr={args.lr})",
            "gradient_checkpointing": args.gradient_checkpointing,
            "batch_size": args.batch_size,
            "warmup_steps": args.warmup,
            "timed_steps": args.steps,
            "qk_scale": args.qk_scale,
            "seed": args.seed,
            "prompt_layout_tokens": PROMPT_LAYOUT,
            "text_tokens_per_sample": sum(PROMPT_LAYOUT.values()),
            "notes": (
                "Random weights; token ids are random with vicuna_v1's layout. tokens_per_s = spliced LLM "
                "tokens of the batch (text + visual, no padding) / median step time; a step is forward, "
                "backward, AdamW step and zero_grad. On CPU each reducer runs in a fresh process; on CUDA one model and optimizer run them in turn."
            ),
        },
        "memory_measure": memory_measure,
        "results": rows,
        "load_average_after_1_5_15min": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
        "wall_s": round(time.perf_counter() - start, 1),
    }


def format_table(results: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    header = (
        f"{'reduction':<34} {'visual/img':>10} {'LLM tokens':>10} {'step s':>8} "
        f"{'tokens/s':>9} {'peak MiB':>9} {'delta MiB':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in results["results"]:
        lines.append(
            f"{row['reduction']:<34} {row['visual_tokens_per_image']['mean']:>10.1f} "
            f"{row['llm_tokens_per_step']:>10} {row['step_s_median']:>8.3f} {row['tokens_per_s']:>9.1f} "
            f"{row['peak_memory_mib']:>9.1f} {row['peak_memory_delta_mib']:>9.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Runs the benchmark, prints the table and writes the JSON."""
    args = parse_args(argv)
    results = run(args)
    print()
    print(format_table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nWrote {args.out} ({results['wall_s']} s)")


if __name__ == "__main__":
    main()
