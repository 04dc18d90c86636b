"""End-to-end inference benchmark of LLaVA-1.5 with each visual-token reducer, at the real shapes.

The model is an in-memory ``LlavaLlamaForCausalLM`` with **random weights** (no files are read):

* ``--shape 7b`` (default): Vicuna-7B (hidden 4096, 32 layers, 32 heads, intermediate 11008, vocab
  32000), CLIP ViT-L/14-336 (24 layers, width 1024, 16 heads, 576 patches) and the ``mlp2x_gelu``
  projector;
* ``--shape 13b``: Vicuna-13B (hidden 5120, 40 layers, 40 heads, intermediate 13824) with the same
  tower;
* ``--shape tiny``: a 2-layer Llama of width 64 and a width-32 tower with ViT-L/14-336's geometry
  (24 layers, 336 px, 14 px patches), for tests.

As in ``bench_tower.py``, every tower layer's ``q_proj``/``k_proj`` weights are multiplied by
``--qk-scale`` (8) so the class attention is peaky and PruMerge finds outliers. On a CPU the Llama is
truncated to ``--llm-layers`` (1 by default) decoder layers: a full 7B prefill takes minutes on a
small CPU. The JSON records ``llm_layers`` and ``llm_layers_full``.

Measured for each reducer setting (``none``, ``prumerge``, ``prumerge_plus`` and ``prumerge`` with
fixed budgets of 64, 128 and 192 tokens), all under ``torch.inference_mode()``:

* end to end, one image at a time (batch 1): pixels -> tower -> reducer -> projector -> splice ->
  greedy generation of exactly ``--new-tokens`` tokens (``min_new_tokens`` = ``max_new_tokens``). The
  run is the model's own path (``prepare_multimodal_inputs`` then ``generate_spliced``); hooks on the
  tower and on the model record timestamps (CUDA events on a GPU, so no host synchronisation is
  added), which split each run into tower + reducer, projector + splice, prefill inside ``generate``
  and decoding;
* prefill alone: one forward of the language model on the spliced prompt of the first image (KV
  cache on, logits of the last position only, as ``generate`` does);
* peak memory over the batch-1 runs (CUDA: ``torch.cuda.max_memory_allocated``; CPU: process RSS
  sampled by a background thread);
* batched throughput (images/s) at each ``--batch-sizes``: every image has its own prompt, the batch
  is left padded, and the greedy outputs of each image are compared with its batch-1 outputs
  (``greedy_identical_to_batch1``, recorded, not asserted);
* reducer overhead: the reduce step (the next layer's class attention and keys, then the reducer) on
  hidden states captured from the tower, as a share of the tower time with no reduction, at
  ``--overhead-batch``;
* the roofline estimate of ``llava.analysis`` (fp16, batch 1) for the same number of visual and text
  tokens, on the matching device of ``llava.analysis.DEVICES`` (H100, H200, A100, V100).

The video case (``--cases video``, on by default) has Video-LLaVA-7B's shape: 8 frames of 1 + 256 tokens
(CLS kept, a 16x16 patch grid), 2,056 visual tokens before reduction, each frame reduced on its own with
the fixed fractions of ``video_prumerge.md`` (PruMerge: N // 8 + 1 = 33 tokens per frame; PruMerge+:
``form="fixed"``). The LLM cost of a video is that of a prompt with that many visual tokens, so the frames
are synthetic tower outputs (seeded), reduced by the registered reducer, projected by the model's
projector and spliced at 8 placeholders of image 0's prompt; prefill time and peak memory are measured.

Usage::

    python benchmarks/bench_e2e.py                                    # CPU, 7B shapes, 1 LLM layer
    python benchmarks/bench_e2e.py --device cuda                      # GPU, 7B, bfloat16, all layers
    python benchmarks/bench_e2e.py --device cuda --shape 13b
    python benchmarks/bench_e2e.py --cases video                      # the video case only (<slug>_video.json)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from llava.analysis import DEVICES, LLM_PRESETS, estimate, spec_from_config
from llava.constants import IMAGE_TOKEN_INDEX
from llava.model import LlavaConfig, LlavaLlamaForCausalLM
from llava.model.llava_arch import MultimodalInputs, splice_visual_tokens
from llava.model.token_reduction import ReducerInputs, ReductionConfig, reduce
from llava.prompting import left_pad
from llava.tiny import llava_mm_fields, tiny_clip_config

# run as a script (python benchmarks/bench_e2e.py), this folder is sys.path[0]; imported as
# benchmarks.bench_e2e (the tests), the siblings are in the benchmarks package
if __package__:
    from .bench_tower import DTYPES, describe, machine_info, token_stats, vit_l_336_config
    from .bench_train import RssSampler
else:
    from bench_tower import DTYPES, describe, machine_info, token_stats, vit_l_336_config
    from bench_train import RssSampler

#: Language-model shapes of each ``--shape`` and the ``llava.analysis`` preset of the full model.
SHAPES: dict[str, dict[str, Any]] = {
    "7b": {
        "llm": {
            "hidden_size": 4096,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "intermediate_size": 11008,
            "vocab_size": 32000,
        },
        "tower": "vit-l-14-336",
        "preset": "vicuna-7b",
    },
    "13b": {
        "llm": {
            "hidden_size": 5120,
            "num_hidden_layers": 40,
            "num_attention_heads": 40,
            "intermediate_size": 13824,
            "vocab_size": 32000,
        },
        "tower": "vit-l-14-336",
        "preset": "vicuna-13b",
    },
    "tiny": {
        "llm": {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "vocab_size": 1000,
        },
        "tower": "tiny",
        "preset": None,
    },
}

#: The adaptive reducer settings; fixed-budget PruMerge rows (``prumerge_b<N>``) come from ``--budgets``.
BASE_SETTINGS: dict[str, dict[str, Any]] = {
    "none": {"method": "none"},
    "prumerge": {"method": "prumerge", "variant": "reference"},
    "prumerge_plus": {"method": "prumerge_plus", "variant": "reference", "form": "adaptive"},
}

#: The video case: Video-LLaVA-7B's 8 frames, each CLS + a 16x16 patch grid (224 px, 14 px patches).
VIDEO_FRAMES = 8
VIDEO_GRID = (16, 16)
#: Scale of the random logits of the synthetic per-frame class attention (softmax of scale * N(0, 1)).
VIDEO_ATTENTION_SCALE = 3.0
CASES = ("image", "video")

#: Fixed pieces of each prompt: ``<s>``, `` USER:``, the ``\\n`` after ``<image>``, `` ASSISTANT:``.
PROMPT_FIXED = {"bos": 1, "user_role": 3, "image_newline": 1, "assistant_role": 5}
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2


def video_settings(patches: int) -> dict[str, dict[str, Any]]:
    """The video rows: no reduction, and PruMerge / PruMerge+ in the fixed per-frame forms of video_prumerge.md.

    PruMerge keeps ``patches // 8 + 1`` tokens per frame (32 by attention plus its extra token: 33 of 256),
    PruMerge+ ``form="fixed"`` (N // 8 by attention plus the N // 8 spatial samples, de-duplicated, plus
    the extra token: at most 65 of 256).
    """
    return {
        "none": {"method": "none"},
        "prumerge": {"method": "prumerge", "variant": "reference", "budget": patches // 8 + 1},
        "prumerge_plus": {"method": "prumerge_plus", "variant": "reference", "form": "fixed"},
    }


def settings_for(budgets: list[int]) -> dict[str, dict[str, Any]]:
    """Every setting the benchmark knows, by key: the adaptive ones, then one row per budget."""
    out = dict(BASE_SETTINGS)
    for budget in budgets:
        out[f"prumerge_b{budget}"] = {"method": "prumerge", "variant": "reference", "budget": budget}
    return out


def device_slug(device: torch.device) -> str:
    """``cpu``, or a short name of the GPU (``h100``, ``h200``, ``a100``, ...) for file names."""
    return gpu_slug(torch.cuda.get_device_name(device)) if device.type == "cuda" else "cpu"


def gpu_slug(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``h100``; an unknown name in lower case with ``_`` separators."""
    lower = name.lower()
    for key in ("h200", "h100", "a100", "v100", "l40s", "a10g", "a6000", "l4"):
        if re.search(rf"(?<![a-z0-9]){key}(?![0-9])", lower):
            return key
    return re.sub(r"[^a-z0-9]+", "_", lower).strip("_") or "cuda"


def analysis_device(slug: str) -> Any:
    """The ``llava.analysis`` device matching ``slug``, or None (CPU or an unlisted GPU)."""
    return DEVICES.get(slug)


# ----------------------------------------------------------------------------------------------
# Model and inputs
# ----------------------------------------------------------------------------------------------


def llava_config(shape: str, llm_layers: int) -> LlavaConfig:
    """The ``LlavaConfig`` of ``shape`` with its Llama truncated to ``llm_layers`` decoder layers."""
    spec = SHAPES[shape]
    return make_llava_config({**spec["llm"], "num_hidden_layers": llm_layers}, spec["tower"])


def make_llava_config(llm: dict[str, int], tower: str) -> LlavaConfig:
    """A ``LlavaConfig`` with the Llama shapes ``llm`` (``SHAPES[...]["llm"]``'s keys) and the ``tower``.

    ``tower``: ``"vit-l-14-336"`` (CLIP ViT-L/14-336) or ``"tiny"`` (width 32, the same 336 px / 14 px
    geometry, so 576 patches).
    """
    if tower == "tiny":
        vision_config = tiny_clip_config(hidden_size=32, num_layers=24, num_heads=4)
    else:
        vision_config = vit_l_336_config()
    return LlavaConfig(
        **llm,
        num_key_value_heads=llm["num_attention_heads"],
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        tie_word_embeddings=False,
        use_cache=True,
        vision_config=vision_config,
        mm_token_reduction={"method": "none"},
        **llava_mm_fields("random-clip-vit-large-patch14-336", vision_config.hidden_size),
    )


def parameter_count(config: LlavaConfig) -> int:
    """Parameters of the model ``config`` describes (linear weights, embeddings, norms; biases ignored)."""
    h, layers, inter, vocab = (
        config.hidden_size,
        config.num_hidden_layers,
        config.intermediate_size,
        config.vocab_size,
    )
    llm = layers * (4 * h * h + 3 * h * inter + 2 * h) + 2 * vocab * h + h
    v = config.vision_config
    side = v.image_size // v.patch_size
    tower = v.num_hidden_layers * (4 * v.hidden_size**2 + 2 * v.hidden_size * v.intermediate_size)
    tower += 3 * v.patch_size**2 * v.hidden_size + (side * side + 1) * v.hidden_size
    projector = v.hidden_size * h + h * h
    return llm + tower + projector


def build_model(
    config: LlavaConfig, seed: int, qk_scale: float, device: torch.device, dtype: torch.dtype
) -> LlavaLlamaForCausalLM:
    """The random LLaVA model of ``config`` in eval mode, tower q/k weights scaled by ``qk_scale``."""
    torch.manual_seed(seed)
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
            layer.self_attn.q_proj.weight.mul_(qk_scale)
            layer.self_attn.k_proj.weight.mul_(qk_scale)
    model.requires_grad_(False)
    return model.eval()


def make_prompts(count: int, text_tokens: int, vocab: int, seed: int) -> list[list[int]]:
    """``count`` prompts ``<s> USER: <image>\\n{question} ASSISTANT:`` of random token ids.

    The first prompt has exactly ``text_tokens`` text tokens; the others vary by up to an eighth of
    the question's length either way, so a batch of them needs padding. The role tokens are the same
    in every prompt.
    """
    fixed = sum(PROMPT_FIXED.values())
    question = text_tokens - fixed
    if question < 1:
        raise ValueError(
            f"--text-tokens must be at least {fixed + 1} (the prompt's fixed pieces are {fixed})."
        )
    generator = torch.Generator().manual_seed(seed)
    user = torch.randint(3, vocab, (PROMPT_FIXED["user_role"],), generator=generator).tolist()
    newline = torch.randint(3, vocab, (PROMPT_FIXED["image_newline"],), generator=generator).tolist()
    assistant = torch.randint(3, vocab, (PROMPT_FIXED["assistant_role"],), generator=generator).tolist()
    spread = question // 8
    prompts = []
    for i in range(count):
        delta = 0 if i == 0 else int(torch.randint(-spread, spread + 1, (), generator=generator))
        words = torch.randint(3, vocab, (question + delta,), generator=generator).tolist()
        prompts.append([BOS_ID, *user, IMAGE_TOKEN_INDEX, *newline, *words, *assistant])
    return prompts


def video_prompt(prompt: list[int], frames: int) -> list[int]:
    """``prompt`` with its one ``<image>`` placeholder replaced by ``frames`` placeholders, one per frame."""
    at = prompt.index(IMAGE_TOKEN_INDEX)
    return [*prompt[:at], *[IMAGE_TOKEN_INDEX] * frames, *prompt[at + 1 :]]


def synthetic_frames(frames: int, width: int, seed: int) -> tuple[torch.Tensor, ReducerInputs]:
    """Seeded stand-ins for a video tower's output: the frame tokens and the reducer's per-frame inputs.

    Returns:
        ``hidden`` ``[T, 1 + N, D]`` (CLS first, N = 256 patches of a 16x16 grid) and the
        :class:`ReducerInputs` of the T frames: the patches ``[T, N, D]``, a class attention ``[T, N]``
        (softmax of ``VIDEO_ATTENTION_SCALE`` times standard normal logits) and keys ``[T, N, D]``.
    """
    rows, cols = VIDEO_GRID
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(frames, 1 + rows * cols, width, generator=generator)  # [T, 1 + N, D]
    logits = VIDEO_ATTENTION_SCALE * torch.randn(frames, rows * cols, generator=generator)
    keys = torch.randn(frames, rows * cols, width, generator=generator)  # [T, N, D]
    inputs = ReducerInputs(
        features=hidden[:, 1:], attention=logits.softmax(dim=-1), keys=keys, grid=VIDEO_GRID
    )
    return hidden, inputs


def padded_batch(prompts: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of ``prompts``, left padded with ``PAD_ID`` (as every front end)."""
    ids, mask = left_pad(prompts, PAD_ID)
    return ids.to(device), mask.to(device)


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StageClock:
    """Timestamps inside one run: CUDA events on a GPU (no host synchronisation), else ``perf_counter``.

    Hooks on the tower (before and after its forward) and on the model (after every forward: the
    prefill inside ``generate``, then one per decoded token) add marks while ``active``.
    """

    def __init__(self, model: LlavaLlamaForCausalLM, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.active = False
        self.marks: dict[str, Any] = {}
        self.forwards: list[Any] = []
        tower = model.get_vision_tower()
        self.handles = [
            tower.register_forward_pre_hook(lambda *_: self._mark("tower_start")),
            tower.register_forward_hook(lambda *_: self._mark("tower_end")),
            model.register_forward_hook(lambda *_: self._forward_end()),
        ]

    def now(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _mark(self, name: str) -> None:
        if self.active:
            self.marks[name] = self.now()

    def _forward_end(self) -> None:
        if self.active:
            self.forwards.append(self.now())

    def start(self) -> None:
        self.marks, self.forwards, self.active = {"start": self.now()}, [], True

    def stop(self) -> None:
        self.marks["end"] = self.now()
        self.active = False

    def ms(self, a: Any, b: Any) -> float:
        """Milliseconds from mark ``a`` to mark ``b`` (after the device has been synchronised)."""
        return a.elapsed_time(b) if self.cuda else (b - a) * 1000.0

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def run_once(
    model: LlavaLlamaForCausalLM,
    clock: StageClock,
    ids: torch.Tensor,
    mask: torch.Tensor,
    pixels: torch.Tensor,
    new_tokens: int,
    device: torch.device,
) -> dict[str, Any]:
    """One end-to-end run (encode, reduce, splice, generate); returns its times, tokens and outputs."""
    sync(device)
    t0 = time.perf_counter()
    clock.start()
    spliced = model.prepare_multimodal_inputs(ids, mask, pixels, padding_side="left")
    clock.marks["spliced"] = clock.now()
    out = model.generate_spliced(
        spliced,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
    )
    clock.stop()
    sync(device)
    wall_ms = (time.perf_counter() - t0) * 1000.0
    m, fw = clock.marks, clock.forwards
    decode = clock.ms(fw[0], fw[-1]) / (len(fw) - 1) if len(fw) > 1 else float("nan")
    return {
        "e2e_ms": wall_ms,
        "tower_reduce_ms": clock.ms(m["tower_start"], m["tower_end"]),
        "projector_splice_ms": clock.ms(m["tower_end"], m["spliced"]),
        "generate_ms": clock.ms(m["spliced"], m["end"]),
        "prefill_in_generate_ms": clock.ms(m["spliced"], fw[0]),
        "decode_ms_per_token": decode,
        "llm_forwards": len(fw),
        "visual_tokens": spliced.num_visual_tokens.cpu(),
        "spliced_length": int(spliced.inputs_embeds.shape[1]),
        "outputs": out.cpu(),
    }


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """Yields a dict filled on exit with ``peak_mib`` and ``baseline_mib`` (allocator or RSS)."""
    result: dict[str, float] = {}
    if device.type == "cuda":
        sync(device)
        baseline = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        sync(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        sampler = RssSampler()
        baseline = sampler.process.memory_info().rss
        with sampler:
            yield result
        peak = sampler.peak
    result["peak_mib"] = round(peak / 2**20, 1)
    result["baseline_mib"] = round(baseline / 2**20, 1)


def timed(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` runs of ``fn`` after ``warmup`` untimed ones, synchronised on a GPU."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def rnd(values: list[float], digits: int = 3) -> list[float]:
    return [round(v, digits) for v in values]


# ----------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------


class Runner:
    """Holds the model, the images and their prompts, and measures one setting at a time."""

    def __init__(self, args: argparse.Namespace, model: LlavaLlamaForCausalLM, log: Callable[[str], None]):
        self.args, self.model, self.log = args, model, log
        self.device = torch.device(args.device)
        self.dtype = DTYPES[args.dtype]
        self.tower = model.get_vision_tower()
        self.clock = StageClock(model, self.device)
        self.n_images = max(args.batch_sizes)
        side = self.tower.config.image_size
        generator = torch.Generator().manual_seed(args.seed + 1)
        count = max(self.n_images, args.overhead_batch)
        self.pixels = torch.randn(count, 3, side, side, generator=generator).to(self.device, self.dtype)
        self.prompts = make_prompts(self.n_images, args.text_tokens, model.config.vocab_size, args.seed + 2)
        self.captured: torch.Tensor | None = None
        self.tower_none_ms: list[float] = []

    def generate(self, indices: list[int]) -> dict[str, Any]:
        ids, mask = padded_batch([self.prompts[i] for i in indices], self.device)
        return run_once(
            self.model, self.clock, ids, mask, self.pixels[indices], self.args.new_tokens, self.device
        )

    def tower_baseline(self) -> None:
        """Times the tower with no reduction at ``--overhead-batch`` and keeps its selected-layer states."""
        args, bs = self.args, self.args.overhead_batch
        self.tower.set_reduction("none")
        layer = self.tower.vision_tower.encoder.layers[self.tower.num_layers_run - 1]

        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            self.captured = (output[0] if isinstance(output, tuple) else output).detach()
            handle.remove()

        handle = layer.register_forward_hook(hook)
        px = self.pixels[:bs]
        self.log(f"reducer overhead: tower with no reduction at batch {bs} ...")
        self.tower_none_ms = timed(lambda: self.tower(px), self.device, args.batch_warmup, args.batch_repeats)
        if self.captured is None:  # no run happened (0 repeats and 0 warmup): capture now
            self.captured = self.tower.encode(px)
            handle.remove()
        self.log(f"reducer overhead: tower with no reduction {statistics.median(self.tower_none_ms):.1f} ms")

    def reduce_step(self, reduction: ReductionConfig) -> dict[str, Any]:
        """The tower's work after the selected layer (what the reducer adds), on captured states."""
        tower, hidden = self.tower, self.captured
        tower.set_reduction(reduction)
        reducer = tower.reducer

        def step() -> Any:
            features = hidden[:, 1:]
            attention = keys = values = None
            if reducer.needs_attention:
                attention, keys, values = tower.attention_and_keys(hidden, reducer.needs_values)
            inputs = ReducerInputs(
                features=features, attention=attention, keys=keys, grid=tower.grid, values=values
            )
            return reducer.fn(inputs, reduction.for_tokens(features.shape[1]))

        times = timed(step, self.device, self.args.warmup, self.args.reduce_repeats)
        tower_ms = statistics.median(self.tower_none_ms)
        return {
            "batch_size": hidden.shape[0],
            "reduce_ms": round(statistics.median(times), 3),
            "reduce_ms_all": rnd(times),
            "tower_none_ms": round(tower_ms, 3),
            "pct_of_tower": round(100.0 * statistics.median(times) / tower_ms, 3),
        }

    def prefill(self) -> dict[str, Any]:
        """One language-model forward on the first image's spliced prompt (KV cache, last logits)."""
        ids, mask = padded_batch(self.prompts[:1], self.device)
        spliced = self.model.prepare_multimodal_inputs(ids, mask, self.pixels[:1], padding_side="left")

        def forward() -> Any:
            return self.model(
                inputs_embeds=spliced.inputs_embeds,
                attention_mask=spliced.attention_mask,
                position_ids=spliced.position_ids,
                use_cache=True,
                logits_to_keep=1,
            )

        times = timed(forward, self.device, self.args.warmup, self.args.repeats)
        return {
            "prefill_ms": round(statistics.median(times), 3),
            "prefill_ms_all": rnd(times),
            "prefill_tokens": int(spliced.inputs_embeds.shape[1]),
            "prefill_visual_tokens": int(spliced.num_visual_tokens[0]),
            "prefill_text_tokens": len(self.prompts[0]) - 1,
        }

    def batch1(self, name: str) -> tuple[dict[str, Any], dict[int, torch.Tensor]]:
        """Batch-1 end-to-end runs over the images (cycled to ``--repeats`` runs at least)."""
        args = self.args
        for i in range(args.warmup):
            self.log(f"{name}: batch 1 warmup {i + 1}/{args.warmup} ...")
            self.generate([0])
        runs, outputs = [], {}
        count = max(args.repeats, self.n_images)
        with peak_memory(self.device) as mem:
            for k in range(count):
                index = k % self.n_images
                run = self.generate([index])
                outputs.setdefault(index, run["outputs"][0])
                runs.append(run)
                self.log(
                    f"{name}: batch 1 image {index}: e2e {run['e2e_ms']:.1f} ms, tower+reduce "
                    f"{run['tower_reduce_ms']:.1f} ms, {int(run['visual_tokens'][0])} visual tokens"
                )

        def med(key: str) -> float:
            return round(statistics.median(r[key] for r in runs), 3)

        first = {i: int(runs[i]["visual_tokens"][0]) for i in range(min(count, self.n_images))}
        e2e = med("e2e_ms")
        row = {
            "visual_tokens": token_stats(torch.tensor(list(first.values()))),
            "visual_tokens_per_image": [first[i] for i in sorted(first)],
            "tower_reduce_ms": med("tower_reduce_ms"),
            "tower_reduce_ms_all": rnd([r["tower_reduce_ms"] for r in runs]),
            "projector_splice_ms": med("projector_splice_ms"),
            "prefill_in_generate_ms": med("prefill_in_generate_ms"),
            "decode_ms_per_token": med("decode_ms_per_token"),
            "generate_ms": med("generate_ms"),
            "e2e_ms": e2e,
            "e2e_ms_all": rnd([r["e2e_ms"] for r in runs]),
            "new_tokens_generated": sorted({int(r["outputs"].shape[1]) for r in runs}),
            "llm_forwards_per_generate": sorted({r["llm_forwards"] for r in runs}),
            "peak_memory_mib": mem["peak_mib"],
            "peak_memory_delta_mib": round(mem["peak_mib"] - mem["baseline_mib"], 1),
            "batch1": {
                "batch_size": 1,
                "images_per_s": round(1000.0 / e2e, 4),
                "batch_ms": e2e,
                "greedy_identical_to_batch1": True,
                "mismatched_images": 0,
                "peak_memory_mib": mem["peak_mib"],
            },
        }
        return row, outputs

    def batched(self, name: str, bs: int, reference: dict[int, torch.Tensor]) -> dict[str, Any]:
        """Throughput at batch ``bs`` (images 0..bs-1, left padded) and its greedy outputs vs batch 1."""
        args, indices = self.args, list(range(bs))
        try:
            for i in range(args.batch_warmup):
                self.log(f"{name}: batch {bs} warmup {i + 1}/{args.batch_warmup} ...")
                self.generate(indices)
            runs = []
            with peak_memory(self.device) as mem:
                for i in range(args.batch_repeats):
                    runs.append(self.generate(indices))
                    self.log(
                        f"{name}: batch {bs} run {i + 1}/{args.batch_repeats}: {runs[-1]['e2e_ms']:.1f} ms"
                    )
        except RuntimeError as err:
            if not is_oom(err):
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.log(f"{name}: batch {bs} skipped: out of memory")
            return {"batch_size": bs, "skipped": "out of memory"}
        outputs = runs[-1]["outputs"]
        mismatched = [i for i in indices if not torch.equal(outputs[i], reference[i])]
        batch_ms = statistics.median(r["e2e_ms"] for r in runs)
        return {
            "batch_size": bs,
            "images_per_s": round(1000.0 * bs / batch_ms, 4),
            "batch_ms": round(batch_ms, 3),
            "batch_ms_all": rnd([r["e2e_ms"] for r in runs]),
            "tower_reduce_ms": round(statistics.median(r["tower_reduce_ms"] for r in runs), 3),
            "decode_ms_per_step": round(statistics.median(r["decode_ms_per_token"] for r in runs), 3),
            "padded_length": runs[-1]["spliced_length"],
            "greedy_identical_to_batch1": not mismatched,
            "mismatched_images": len(mismatched),
            "peak_memory_mib": mem["peak_mib"],
        }

    def video_inputs(self, reduction: ReductionConfig) -> tuple[MultimodalInputs, torch.Tensor]:
        """Image 0's prompt with one placeholder per frame, spliced with the frames reduced by ``reduction``.

        Each frame is reduced on its own (its 256 patches), its CLS token is put first (Video-LLaVA keeps it),
        and the result goes through the model's projector. Returns the spliced inputs and the ``[T]`` tokens
        of each frame.
        """
        frames = self.args.video_frames
        hidden, inputs = synthetic_frames(frames, self.tower.config.hidden_size, self.args.seed + 3)
        out = reduce(inputs, reduction.for_tokens(inputs.features.shape[1]))
        tokens = torch.cat([hidden[:, :1], out.tokens], dim=1)  # [T, 1 + M, D]
        lengths = out.lengths + 1  # [T]
        projector = self.model.get_model().mm_projector
        projected = projector(tokens.to(self.device, self.dtype))  # [T, 1 + M, H]
        valid = torch.arange(projected.shape[1], device=self.device)[None] < lengths.to(self.device)[:, None]
        projected = projected * valid[..., None].to(projected.dtype)
        ids, mask = padded_batch([video_prompt(self.prompts[0], frames)], self.device)
        spliced = splice_visual_tokens(
            ids,
            mask,
            None,
            projected,
            lengths.to(self.device),
            self.model.get_input_embeddings(),
            padding_side="left",
        )
        return spliced, lengths

    def video_setting(self, key: str, reduction: dict[str, Any], llm_specs: dict[str, Any]) -> dict[str, Any]:
        """Prefill time and peak memory of the video prompt with the frames reduced by ``reduction``."""
        config = ReductionConfig.from_value(reduction)
        self.model.set_token_reduction("none")  # the frames are reduced here; the tower is not run
        spliced, lengths = self.video_inputs(config)

        def forward() -> Any:
            return self.model(
                inputs_embeds=spliced.inputs_embeds,
                attention_mask=spliced.attention_mask,
                position_ids=spliced.position_ids,
                use_cache=True,
                logits_to_keep=1,
            )

        with peak_memory(self.device) as mem:
            times = timed(forward, self.device, self.args.warmup, self.args.repeats)
        visual = int(spliced.num_visual_tokens[0])
        text = len(self.prompts[0]) - 1
        analysis = analytical(llm_specs, visual, text, self.args)
        analysis["clip_ms"] = None  # the estimate's tower is ViT-L/14-336 on one image, not 8 video frames
        row = {
            "key": key,
            "setting": describe(config),
            "mm_token_reduction": config.to_dict(),
            "frames": len(lengths),
            "visual_tokens": visual,
            "visual_tokens_per_frame": lengths.tolist(),
            "visual_tokens_full": len(lengths) * (1 + VIDEO_GRID[0] * VIDEO_GRID[1]),
            "prefill_tokens": int(spliced.inputs_embeds.shape[1]),
            "prefill_text_tokens": text,
            "prefill_ms": round(statistics.median(times), 3),
            "prefill_ms_all": rnd(times),
            "peak_memory_mib": mem["peak_mib"],
            "peak_memory_delta_mib": round(mem["peak_mib"] - mem["baseline_mib"], 1),
            "analytical": analysis,
        }
        self.log(f"video {row['setting']}: {visual} visual tokens, prefill {row['prefill_ms']:.1f} ms")
        return row

    def setting(self, key: str, reduction: dict[str, Any], llm_specs: dict[str, Any]) -> dict[str, Any]:
        """Every measurement of one reducer setting; returns its row."""
        config = self.model.set_token_reduction(reduction)
        name = describe(config)
        row: dict[str, Any] = {"key": key, "setting": name, "mm_token_reduction": config.to_dict()}
        measured, reference = self.batch1(name)
        row.update(measured)
        row.update(self.prefill())
        self.log(f"{name}: prefill {row['prefill_ms']:.1f} ms ({row['prefill_tokens']} tokens)")
        row["throughput"] = [row.pop("batch1")]
        for bs in self.args.batch_sizes:
            if bs > 1:
                row["throughput"].append(self.batched(name, bs, reference))
        row["reducer_overhead"] = self.reduce_step(config)
        row["analytical"] = analytical(
            llm_specs, row["prefill_visual_tokens"], row["prefill_text_tokens"], self.args
        )
        self.log(
            f"{name}: e2e {row['e2e_ms']:.1f} ms, decode {row['decode_ms_per_token']:.2f} ms/token, "
            f"reduce step {row['reducer_overhead']['pct_of_tower']:.2f}% of the tower"
        )
        return row


def analytical(specs: dict[str, Any], visual: int, text: int, args: argparse.Namespace) -> dict[str, Any]:
    """The roofline estimate (fp16, batch 1) of the full model for this prompt, on the matching device.

    FLOPs do not depend on the device, so they are given on any machine (``measured_llm_prefill_gflop``
    is for the language model as measured, with its truncated layers); times only where a device matches.
    """
    device = analysis_device(args.slug)
    flops_device = device or DEVICES["h100"]  # only for FLOPs and bytes, which no device changes
    full = estimate(specs["full"], flops_device, "fp16", visual, text, 1)
    measured = estimate(specs["measured"], flops_device, "fp16", visual, text, 1)
    has_clip = SHAPES[args.shape]["tower"] != "tiny"
    return {
        "device": device.name if device else None,
        "llm": specs["full"].name,
        "precision": "fp16",
        "visual_tokens": visual,
        "text_tokens": text,
        "batch": 1,
        "prefill_ms": round(full.prefill_ms, 3) if device else None,
        "decode_ms_per_token": round(full.decode_ms_per_token, 4) if device else None,
        "clip_ms": round(full.clip_ms, 3) if device and has_clip else None,
        "total_memory_gb": round(full.total_memory_gb, 3),
        "prefill_gflop": round(full.flops_tera * 1e3, 3),
        "measured_llm_prefill_gflop": round(measured.flops_tera * 1e3, 3),
    }


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--dtype", choices=tuple(DTYPES), default=None, help="default: bfloat16 on cuda, float32 on cpu"
    )
    parser.add_argument("--shape", choices=tuple(SHAPES), default="7b")
    parser.add_argument(
        "--llm-layers",
        type=int,
        default=None,
        help="decoder layers of the Llama (default: all on cuda and for tiny; 1 on cpu for 7b/13b)",
    )
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=None, help="default: 1 8 32 on cuda, 1 4 on cpu"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs of the batch-1 and prefill figures (default 10 on cuda, 3 on cpu); the batch-1 "
        "runs cycle over the images and are at least max(--batch-sizes)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed runs before the batch-1, prefill and reduce-step figures (1 on cuda, 0 on cpu)",
    )
    parser.add_argument(
        "--batch-repeats",
        type=int,
        default=None,
        help="timed runs per batch size above 1 (3 on cuda, 1 on cpu)",
    )
    parser.add_argument(
        "--batch-warmup",
        type=int,
        default=None,
        help="untimed runs per batch size above 1 (1 on cuda, 0 on cpu)",
    )
    parser.add_argument(
        "--overhead-batch",
        type=int,
        default=None,
        help="batch of the reducer-overhead figure (16 cuda, 4 cpu)",
    )
    parser.add_argument("--reduce-repeats", type=int, default=20, help="timed runs of the reduce step")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated per image (exactly)")
    parser.add_argument(
        "--text-tokens", type=int, default=40, help="text tokens of the (first) prompt, placeholder excluded"
    )
    parser.add_argument(
        "--budgets", type=int, nargs="*", default=[64, 128, 192], help="fixed PruMerge budgets"
    )
    parser.add_argument(
        "--methods", nargs="+", default=None, help="settings to run (default: all); see --help"
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=CASES,
        default=list(CASES),
        help="image: every --methods setting on one image; video: 8 frames x 257 tokens with none, PruMerge "
        "and PruMerge+ per frame (prefill and memory)",
    )
    parser.add_argument(
        "--video-frames", type=int, default=VIDEO_FRAMES, help="frames of the video case (Video-LLaVA: 8)"
    )
    parser.add_argument(
        "--qk-scale", type=float, default=8.0, help="factor on every tower layer's q/k weights"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: benchmarks/results/<cpu|gpu name>[_<shape>][_video].json (_video: --cases video alone)",
    )
    args = parser.parse_args(argv)
    on_gpu = args.device == "cuda"
    if on_gpu and not torch.cuda.is_available():
        parser.error("--device cuda was asked for but torch sees no CUDA device.")
    known = settings_for(args.budgets)
    args.methods = args.methods or list(known)
    unknown = [m for m in args.methods if m not in known]
    if unknown:
        parser.error(f"unknown --methods {unknown}; choose from {list(known)}")
    args.dtype = args.dtype or ("bfloat16" if on_gpu else "float32")
    full = SHAPES[args.shape]["llm"]["num_hidden_layers"]
    if args.llm_layers is None:
        args.llm_layers = full if on_gpu or args.shape == "tiny" else 1
    if not 1 <= args.llm_layers <= full:
        parser.error(f"--llm-layers must be between 1 and {full} for --shape {args.shape}")
    args.batch_sizes = sorted(set(args.batch_sizes or ([1, 8, 16, 32] if on_gpu else [1, 4])) | {1})
    args.repeats = args.repeats or (10 if on_gpu else 3)
    if args.warmup is None:
        args.warmup = 1 if on_gpu else 0
    args.batch_repeats = args.batch_repeats or (3 if on_gpu else 1)
    if args.batch_warmup is None:
        args.batch_warmup = 1 if on_gpu else 0
    args.overhead_batch = args.overhead_batch or (16 if on_gpu else 4)
    if args.new_tokens < 2:
        parser.error("--new-tokens must be at least 2 (one prefill token plus decoded ones)")
    if args.video_frames < 1:
        parser.error("--video-frames must be at least 1")
    args.cases = [case for case in CASES if case in args.cases]
    args.slug = device_slug(torch.device(args.device))
    if args.out is None:
        suffix = "" if args.shape == "7b" else f"_{args.shape}"
        suffix += "_video" if args.cases == ["video"] else ""
        args.out = Path(__file__).resolve().parent / "results" / f"{args.slug}{suffix}.json"
    return args


def memory_check(config: LlavaConfig, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why the model will not fit on the GPU (weights plus a 25 % and 6 GiB margin), or None."""
    if device.type != "cuda":
        return None
    need = parameter_count(config) * torch.finfo(dtype).bits // 8
    free, total = torch.cuda.mem_get_info(device)
    if need * 1.25 + 6 * 2**30 > free:
        return (
            f"skipped: the weights need {need / 2**30:.1f} GiB (plus activations and KV cache) but only "
            f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB are free on {torch.cuda.get_device_name(device)}"
        )
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Builds the model and measures every setting; returns the JSON-serialisable results."""
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", flush=True)

    machine = machine_info(device, args.dtype)  # before the run: the load average is other processes'
    full_layers = SHAPES[args.shape]["llm"]["num_hidden_layers"]
    config = llava_config(args.shape, args.llm_layers)
    notes = [
        "Random weights (seeded), tower q_proj/k_proj scaled by qk_scale: kept-token counts of the adaptive "
        "reducers are illustrative, not those of the pretrained CLIP. Token ids are random; only their "
        "number matters for the timings.",
        "Prompts are '<s> USER: <image>\\n{question} ASSISTANT:' (vicuna_v1's roles without its system prompt) "
        "with text_tokens text tokens for image 0; the other images' questions vary in length so that "
        "batches are left padded.",
        "Batch-1 figures are medians over runs that cycle over the images; prefill_ms is one LLM forward "
        "on image 0's spliced prompt (KV cache on, last-position logits); decode_ms_per_token is the mean "
        "interval between consecutive LLM forwards inside generate (model forward hooks); "
        "prefill_in_generate_ms runs from the end of the splice to the end of generate's first forward.",
        "Throughput at batch 1 is 1000 / median e2e_ms; at batch B it is B / median time of one batched run "
        "(encode, reduce, splice, generate new_tokens tokens for every image).",
        "reducer_overhead: the tower's work after the selected layer (layer_norm1, q_proj(CLS) and k_proj of "
        "the next layer, the reducer) on hidden states captured from the tower, as a percentage of the "
        "tower's time with no reduction at the same batch size.",
        "analytical: llava.analysis.estimate (roofline, fp16, batch 1) of the full LLM for image 0's visual "
        "and text tokens, on the llava.analysis device matching this GPU; times are null on a CPU or an "
        "unlisted GPU.",
    ]
    if args.llm_layers < full_layers:
        notes.insert(
            0,
            f"TRUNCATED LLM: the Llama has {args.llm_layers} of its {full_layers} decoder layers, so prefill, "
            "decode, e2e, throughput and memory figures are NOT those of the full model (the tower, reducer, "
            "projector, embeddings and lm_head are full size).",
        )
    if "video" in args.cases:
        notes.append(
            f"video: {args.video_frames} frames x (1 + {VIDEO_GRID[0] * VIDEO_GRID[1]}) tokens (Video-LLaVA-7B, CLS "
            "kept). SYNTHETIC frames: seeded random tower outputs and class attention stand in for the video "
            "tower, each frame is reduced on its own by the registered reducer (fixed per-frame forms of "
            "video_prumerge.md), projected by the model's projector and spliced at one placeholder per frame "
            "of image 0's prompt. Only the prefill (one LLM forward, KV cache on, last-position logits) and "
            "its peak memory are measured; the token counts, not the values, set the LLM cost."
        )
    if device.type == "cpu":
        notes.append(
            "CPU peak memory is the process RSS (psutil, sampled every 2 ms) during the batch-1 runs; the "
            "allocator may keep memory freed by earlier settings, so compare the delta with care."
        )
    else:
        notes.append(
            "CUDA peak memory is torch.cuda.max_memory_allocated over the batch-1 runs (reset per setting); "
            "timestamps inside a run are CUDA events, so no host synchronisation is added."
        )
    result: dict[str, Any] = {
        "benchmark": "bench_e2e.py",
        "machine": machine,
        "config": {
            "shape": args.shape,
            "device_slug": args.slug,
            "dtype": args.dtype,
            "llm": {k: getattr(config, k) for k in SHAPES[args.shape]["llm"]},
            "llm_layers": args.llm_layers,
            "llm_layers_full": full_layers,
            "tower": {
                k: getattr(config.vision_config, k)
                for k in (
                    "hidden_size",
                    "num_hidden_layers",
                    "num_attention_heads",
                    "intermediate_size",
                    "image_size",
                    "patch_size",
                )
            },
            "projector": config.mm_projector_type,
            "parameters_m": round(parameter_count(config) / 1e6, 1),
            "batch_sizes": args.batch_sizes,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "batch_repeats": args.batch_repeats,
            "batch_warmup": args.batch_warmup,
            "overhead_batch": args.overhead_batch,
            "reduce_repeats": args.reduce_repeats,
            "new_tokens": args.new_tokens,
            "text_tokens": args.text_tokens,
            "methods": args.methods,
            "cases": args.cases,
            "video": {
                "frames": args.video_frames,
                "grid": list(VIDEO_GRID),
                "cls_kept": True,
                "visual_tokens_full": args.video_frames * (1 + VIDEO_GRID[0] * VIDEO_GRID[1]),
                "settings": video_settings(VIDEO_GRID[0] * VIDEO_GRID[1]),
                "attention_logit_scale": VIDEO_ATTENTION_SCALE,
                "inputs": "synthetic (seeded random tower outputs, class attention and keys)",
            }
            if "video" in args.cases
            else None,
            "qk_scale": args.qk_scale,
            "seed": args.seed,
            "generation": "greedy, KV cache (DynamicCache), min_new_tokens = max_new_tokens = new_tokens",
            "notes": notes,
        },
        "rows": [],
        "video_rows": [],
    }
    skip = memory_check(config, device, dtype)
    if skip is None:
        try:
            measure(args, config, device, dtype, log, result)
        except RuntimeError as err:
            if not is_oom(err):
                raise
            done = len(result["rows"])
            skip = f"out of memory after {done} of {len(args.methods)} settings ({str(err).splitlines()[0]})"
    if skip is not None:
        log(skip)
        result["skipped"] = skip
        notes.append(skip)
    if hasattr(os, "getloadavg"):
        machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["total_runtime_s"] = round(time.perf_counter() - start, 1)
    return result


def measure(
    args: argparse.Namespace,
    config: LlavaConfig,
    device: torch.device,
    dtype: torch.dtype,
    log: Callable[[str], None],
    result: dict[str, Any],
) -> None:
    """Builds the model and appends one row per setting to ``result["rows"]`` and ``result["video_rows"]``
    (kept if a later setting fails)."""
    layers = f"{args.llm_layers} of {SHAPES[args.shape]['llm']['num_hidden_layers']}"
    log(
        f"building the {args.shape} model (LLM layers: {layers}) with random weights on {device} in {args.dtype} ..."
    )
    if args.llm_layers < SHAPES[args.shape]["llm"]["num_hidden_layers"]:
        log("NOTE: the language model is truncated; LLM figures are not those of the full model.")
    model = build_model(config, args.seed, args.qk_scale, device, dtype)
    result["config"]["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    log(f"built: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
    preset = SHAPES[args.shape]["preset"]
    measured_spec = spec_from_config(model.config, f"{args.shape}-{args.llm_layers}-layers")
    specs = {
        "full": LLM_PRESETS[preset] if preset else spec_from_config(model.config, args.shape),
        "measured": measured_spec,
    }
    settings = settings_for(args.budgets)
    with torch.inference_mode():
        runner = Runner(args, model, log)
        if "image" in args.cases:
            runner.tower_baseline()
            for key in args.methods:
                result["rows"].append(runner.setting(key, settings[key], specs))
        if "video" in args.cases:
            for key, reduction in video_settings(VIDEO_GRID[0] * VIDEO_GRID[1]).items():
                result["video_rows"].append(runner.video_setting(key, reduction, specs))
        runner.clock.close()


def format_table(results: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    cfg, m = results["config"], results["machine"]
    lines = [
        f"Device: {m['device_name']} ({m['device']}, {cfg['dtype']}), shape {cfg['shape']}, "
        f"LLM layers {cfg['llm_layers']}/{cfg['llm_layers_full']}, {cfg['new_tokens']} new tokens"
    ]
    if cfg["llm_layers"] < cfg["llm_layers_full"]:
        lines.append("NOTE: truncated LLM; prefill/decode/e2e/throughput are not those of the full model.")
    if results.get("skipped"):
        lines.append(results["skipped"])
    if results["rows"]:
        lines += image_table(results)
    if results.get("video_rows"):
        lines += video_table(results)
    lines.append(f"Total runtime: {results['total_runtime_s']:.1f} s")
    return "\n".join(lines)


def video_table(results: dict[str, Any]) -> list[str]:
    """The video rows as plain-text lines."""
    video = results["config"]["video"]
    lines = [
        "",
        f"Video: {video['frames']} frames x {video['visual_tokens_full'] // video['frames']} tokens, reduced per "
        "frame (synthetic frames; prefill only)",
    ]
    header = f"{'setting':<32} {'visual':>7} {'per frame':>14} {'prefill':>9} {'peak MiB':>9} {'delta MiB':>9} {'roofline':>9}"
    lines += [header, "-" * len(header)]
    for r in results["video_rows"]:
        per_frame = r["visual_tokens_per_frame"]
        spread = (
            f"{min(per_frame)}-{max(per_frame)}" if min(per_frame) != max(per_frame) else str(per_frame[0])
        )
        roof = r["analytical"]["prefill_ms"]
        lines.append(
            f"{r['setting']:<32} {r['visual_tokens']:>7} {spread:>14} {r['prefill_ms']:>9.1f} "
            f"{r['peak_memory_mib']:>9.1f} {r['peak_memory_delta_mib']:>9.1f} "
            f"{('-' if roof is None else f'{roof:.2f}'):>9}"
        )
    return lines


def image_table(results: dict[str, Any]) -> list[str]:
    """The image rows as plain-text lines."""
    cfg, lines = results["config"], []
    batches = cfg["batch_sizes"]
    header = (
        f"{'setting':<32} {'visual':>7} {'tower+red':>10} {'prefill':>9} {'ms/tok':>7} {'e2e ms':>9} "
        f"{'peak MiB':>9} "
        + " ".join(f"{'img/s@' + str(b):>9}" for b in batches)
        + f" {'red %':>6} {'roofline':>9}"
    )
    lines += [header, "-" * len(header)]
    for r in results["rows"]:
        tput = {t["batch_size"]: t for t in r["throughput"]}
        cells = []
        for b in batches:
            t = tput.get(b, {})
            value = f"{t['images_per_s']:.3f}" if "images_per_s" in t else "-"
            cells.append(f"{value + ('' if t.get('greedy_identical_to_batch1', True) else '*'):>9}")
        roof = r["analytical"]["prefill_ms"]
        lines.append(
            f"{r['setting']:<32} {r['visual_tokens']['mean']:>7.1f} {r['tower_reduce_ms']:>10.1f} "
            f"{r['prefill_ms']:>9.1f} {r['decode_ms_per_token']:>7.2f} {r['e2e_ms']:>9.1f} "
            f"{r['peak_memory_mib']:>9.1f} "
            + " ".join(cells)
            + f" {r['reducer_overhead']['pct_of_tower']:>6.2f}"
            f" {('-' if roof is None else f'{roof:.2f}'):>9}"
        )
    lines.append("(* greedy outputs differ from batch 1 for some images; red % = reduce step / tower time)")
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark, prints the table, writes the JSON and returns the results."""
    args = parse_args(argv)
    results = run(args)
    print()
    print(format_table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nWrote {args.out}")
    return results


if __name__ == "__main__":
    main()
