"""The project's GPU check: one run, one JSON file, for the day a GPU is at hand.

Sections (each timed, each recorded even when it fails):

* ``inference``: a tiny random LLaVA in float16 and bfloat16 with every registered reducer; batched
  greedy answers (left padding) against each sample alone, and the largest difference of the first
  answer token's logits between the two.
* ``fastv_sdpa``: FastV in the same dtype: every decoder layer runs SDPA, and the layers after K cache
  only the kept tokens.
* ``lora_zero2``: a few LoRA steps in bf16 with ZeRO-2 on one GPU, through the DeepSpeed launcher and
  ``llava/train/train_mem.py`` as the published scripts run it.
* ``bench_e2e``: ``benchmarks/bench_e2e.py`` at Vicuna-7B / CLIP ViT-L/14-336 shapes with random weights
  (its own JSON under ``benchmarks/results/``), images and the Video-LLaVA video case (2,056 visual tokens,
  and PruMerge / PruMerge+ per frame).
* ``bench_atp``: ``benchmarks/bench_atp.py`` at Vicuna-7B shapes: the cost of each ATP module step, and
  prefill with ATP against none, FastV and PruMerge at equal N̄ (its own JSON).

``--smoke`` runs the same code on the CPU at tiny sizes (float32 and bfloat16, ZeRO-2 without bf16, the
tiny benchmark shape) in a couple of minutes; the test suite runs it. Run through
``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
SECTIONS = ("inference", "fastv_sdpa", "lora_zero2", "bench_e2e", "bench_atp")
VIDEO_TOKENS = 2056  # bench_e2e's video case without reduction: 8 frames x (CLS + 256 patches)
QUESTIONS = ["What is this?", "Describe the image in detail please.", "How many objects are there?"]
NEW_TOKENS = 8
FASTV = {"method": "fastv", "ratio": 0.5, "llm_layer": 0}  # the tiny model has 2 decoder layers
# ATP training-free (fixed thresholds), pruning the input of the tiny model's second layer
ATP = {"method": "atp", "atp_layers": (1,), "atp_redundancy_threshold": 0.5, "atp_spatial_threshold": 0.5}
IN_LLM = {"fastv": FASTV, "atp": ATP}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes (what the test suite runs)")
    parser.add_argument(
        "--out", default=None, help="JSON file (default benchmarks/results/gpu_check_<device>.json)"
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections to leave out")
    parser.add_argument("--work-dir", default=None, help="scratch folder (default: a temporary one)")
    return parser.parse_args(argv)


def machine() -> dict[str, Any]:
    import transformers

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info.update(
            gpu=torch.cuda.get_device_name(0),
            cuda_version=torch.version.cuda,
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    return info


def set_reducer(model, name: str, pixels: torch.Tensor) -> None:
    """``name`` with its defaults, or with a budget of 64 (in-LLM methods: :data:`IN_LLM`) where it needs one.

    Some reducers say so only when they run, so the tower runs once on one image to find out.
    """
    try:
        model.set_token_reduction(name)
        with torch.no_grad():
            model.get_vision_tower()(pixels[:1])
    except ValueError:
        model.set_token_reduction(IN_LLM.get(name, {"method": name, "budget": 64}))


def prompts(tokenizer, device) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Left-padded ids and mask ``[B, T]`` of :data:`QUESTIONS`, and each prompt alone."""
    from llava.prompting import left_pad, prompt_ids

    singles = [prompt_ids(tokenizer, question, "vicuna_v1", image=True) for question in QUESTIONS]
    ids, mask = left_pad(singles)
    return ids.to(device), mask.to(device), [s.to(device) for s in singles]


@torch.no_grad()
def first_logits(model, ids, mask, pixels) -> torch.Tensor:
    """``[B, V]`` float32 logits of the first answer token (the spliced prompt's last position)."""
    spliced = model.prepare_multimodal_inputs(ids, mask, pixels, padding_side="left")
    out = model(
        inputs_embeds=spliced.inputs_embeds,
        attention_mask=spliced.attention_mask,
        visual_mask=spliced.visual_mask,
        use_cache=False,
    )
    return out.logits[:, -1].float()


def check_reducer(model, ids, mask, singles, pixels) -> dict[str, Any]:
    """Batched against batch-1 greedy answers and first-token logits, for the model's current reducer."""
    kwargs = {"max_new_tokens": NEW_TOKENS, "do_sample": False, "eos_token_id": None, "pad_token_id": 0}
    start = time.perf_counter()
    batched = model.generate(ids, attention_mask=mask, images=pixels, **kwargs).tolist()
    alone = [
        model.generate(s[None], images=pixels[i : i + 1], **kwargs)[0].tolist() for i, s in enumerate(singles)
    ]
    batch_logits = first_logits(model, ids, mask, pixels)
    single_logits = torch.cat(
        [first_logits(model, s[None], None, pixels[i : i + 1]) for i, s in enumerate(singles)]
    )
    scale = float(single_logits.abs().max())
    return {
        "batched_equals_single": batched == alone,
        "samples_equal": sum(a == b for a, b in zip(batched, alone)),
        "first_token_max_abs_logit_diff": float((batch_logits - single_logits).abs().max()),
        "first_token_max_abs_logit": scale,
        "seconds": round(time.perf_counter() - start, 3),
    }


def inference(ctx: dict[str, Any]) -> dict[str, Any]:
    from llava.model.loader import load_pretrained_model
    from llava.model.token_reduction import available_reducers

    out: dict[str, Any] = {}
    for dtype_name in ctx["dtypes"]:
        tokenizer, model, _, _ = load_pretrained_model(
            str(ctx["tiny"]), device=ctx["device"], dtype=getattr(torch, dtype_name)
        )
        ids, mask, singles = prompts(tokenizer, ctx["device"])
        generator = torch.Generator().manual_seed(0)
        pixels = torch.randn(len(QUESTIONS), 3, 336, 336, generator=generator).to(ctx["device"], model.dtype)
        rows = {}
        for name in available_reducers():
            set_reducer(model, name, pixels)
            rows[model.get_vision_tower().reduction.describe()] = check_reducer(
                model, ids, mask, singles, pixels
            )
        out[dtype_name] = rows
        del model
    return out


def fastv_sdpa(ctx: dict[str, Any]) -> dict[str, Any]:
    from llava.model.loader import load_pretrained_model
    from llava.model.token_reduction.in_llm import find_cache

    dtype = getattr(torch, ctx["dtypes"][-1])
    tokenizer, model, _, _ = load_pretrained_model(str(ctx["tiny"]), device=ctx["device"], dtype=dtype)
    model.set_token_reduction(FASTV)
    ids, mask, _ = prompts(tokenizer, ctx["device"])
    pixels = torch.randn(len(QUESTIONS), 3, 336, 336, generator=torch.Generator().manual_seed(1))
    spliced = model.prepare_multimodal_inputs(ids, mask, pixels.to(ctx["device"], dtype), padding_side="left")
    sdpa = torch.nn.functional.scaled_dot_product_attention
    with mock.patch("torch.nn.functional.scaled_dot_product_attention", wraps=sdpa) as calls, torch.no_grad():
        out = model(
            inputs_embeds=spliced.inputs_embeds,
            attention_mask=spliced.attention_mask,
            visual_mask=spliced.visual_mask,
            use_cache=True,
        )
    cache = find_cache(out)
    lengths = [int(layer.keys.shape[-2]) for layer in cache.layers]
    layers = model.config.num_hidden_layers
    return {
        "attn_implementation": model.config._attn_implementation,
        "sdpa_calls": calls.call_count,
        "decoder_layers": layers,
        "sdpa_in_every_layer": calls.call_count == layers,
        "cached_tokens_per_layer": lengths,
        "prompt_tokens": int(spliced.inputs_embeds.shape[1]),
        "later_layers_cache_fewer": all(n < lengths[0] for n in lengths[FASTV["llm_layer"] + 1 :])
        and len(lengths) > FASTV["llm_layer"] + 1,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lora_zero2(ctx: dict[str, Any]) -> dict[str, Any]:
    """A few LoRA steps with ZeRO-2 through the DeepSpeed launcher (bf16 on a GPU)."""
    from llava.tiny import save_tiny_train_workspace
    from llava.tokenizer_train import train_sentencepiece_tokenizer

    root = ctx["work"] / "train"
    train_sentencepiece_tokenizer(
        ["What colour is the square? red blue green", "Say yes. yes"] * 4, root / "tok"
    )
    base, clip = save_tiny_train_workspace(root, root / "tok", num_images=16)
    out = root / "lora"
    steps = 4
    command = [
        sys.executable,
        "-m",
        "deepspeed.launcher.runner",
        "--num_gpus",
        "1",
        "--master_port",
        str(free_port()),
        str(REPO_ROOT / "llava" / "train" / "train_mem.py"),
        "--deepspeed",
        str(REPO_ROOT / "scripts" / "zero2.json"),
        "--model_name_or_path",
        str(base),
        "--vision_tower",
        str(clip),
        "--data_path",
        str(root / "data.json"),
        "--image_folder",
        str(root / "images"),
        "--image_aspect_ratio",
        "pad",
        "--mm_projector_type",
        "mlp2x_gelu",
        "--lora_enable",
        "True",
        "--lora_r",
        "8",
        "--lora_alpha",
        "16",
        "--token_reduction",
        "prumerge_plus",
        "--learning_rate",
        "2e-4",
        "--mm_projector_lr",
        "2e-5",
        "--bf16",
        str(ctx["device"] == "cuda"),
        "--output_dir",
        str(out),
        "--per_device_train_batch_size",
        "4",
        "--max_steps",
        str(steps),
        "--save_strategy",
        "steps",
        "--save_steps",
        str(steps),
        "--logging_steps",
        "1",
        "--report_to",
        "none",
        "--dataloader_num_workers",
        "0",
    ]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if ctx["device"] != "cuda":
        env["CUDA_VISIBLE_DEVICES"] = ""
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    seconds = round(time.perf_counter() - start, 1)
    if result.returncode != 0:
        return {"returncode": result.returncode, "seconds": seconds, "stderr_tail": result.stderr[-4000:]}
    state_file = out / f"checkpoint-{steps}" / "trainer_state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    losses = [row["loss"] for row in state.get("log_history", []) if "loss" in row]
    return {
        "returncode": 0,
        "seconds": seconds,
        "steps": state.get("global_step"),
        "losses": losses,
        "losses_finite": bool(losses) and all(math.isfinite(x) for x in losses),
        "bf16": ctx["device"] == "cuda",
        "adapter_saved": (out / "adapter_model.safetensors").is_file(),
    }


def run_benchmark(script: str, args: list[str]) -> dict[str, Any]:
    """Runs ``benchmarks/<script>`` with ``args`` in a fresh process; its exit code, time, JSON and output."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    written = [
        line.split("Wrote ", 1)[-1].strip()
        for line in result.stdout.splitlines()
        if line.startswith("Wrote ")
    ]
    return {
        "returncode": result.returncode,
        "seconds": round(time.perf_counter() - start, 1),
        "args": args,
        "json": written[-1] if written else None,
        "stdout_tail": result.stdout[-3000:],
        "stderr_tail": result.stderr[-3000:] if result.returncode else "",
    }


def bench_e2e(ctx: dict[str, Any]) -> dict[str, Any]:
    if ctx["device"] == "cuda":
        args = ["--device", "cuda", "--shape", "7b", "--batch-sizes", "1", "8", "--repeats", "5"]
    else:
        args = [
            "--device",
            "cpu",
            "--shape",
            "tiny",
            "--batch-sizes",
            "1",
            "2",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--overhead-batch",
            "2",
            "--reduce-repeats",
            "1",
            "--new-tokens",
            "4",
            "--out",
            str(ctx["bench_out"]),
        ]
    result = run_benchmark("bench_e2e.py", args)
    if result["json"]:  # the video case's visual tokens per setting, for the verdict
        rows = json.loads(Path(result["json"]).read_text()).get("video_rows", [])
        result["video_visual_tokens"] = {row["key"]: row["visual_tokens"] for row in rows}
    return result


def bench_atp(ctx: dict[str, Any]) -> dict[str, Any]:
    if ctx["device"] == "cuda":
        args = ["--device", "cuda", "--preset", "7b", "--repeats", "10", "--module-repeats", "20"]
    else:
        args = ["--device", "cpu", "--preset", "tiny", "--text-tokens", "40", "--targets", "144"]
        args += ["--calibration-steps", "3", "--repeats", "1", "--warmup", "0", "--module-repeats", "1"]
        args += ["--out", str(ctx["atp_out"])]
    result = run_benchmark("bench_atp.py", args)
    if result["json"]:  # N̄ of every row, for the verdict
        cases = json.loads(Path(result["json"]).read_text())["cases"]
        result["mean_visual_tokens"] = {
            f"{row['key']}@{row['target']}": row["mean_visual_tokens"] for row in cases[0]["rows"]
        }
    return result


def run_section(
    name: str, fn: Callable[[dict[str, Any]], dict[str, Any]], ctx: dict[str, Any]
) -> dict[str, Any]:
    print(f"[gpu_check] {name} ...", flush=True)
    start = time.perf_counter()
    try:
        result = {"ok": True, **fn(ctx)}
    except Exception as exc:  # recorded, and the other sections still run
        result = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc()[-4000:],
        }
    result["section_seconds"] = round(time.perf_counter() - start, 1)
    print(
        f"[gpu_check] {name}: {'done' if result['ok'] else 'FAILED'} in {result['section_seconds']} s",
        flush=True,
    )
    return result


def verdict(results: dict[str, Any]) -> list[str]:
    """Problems found: failed sections, and batched ≠ batch-1 answers in float32 (exact there)."""
    problems = [f"{name}: {r['error']}" for name, r in results["sections"].items() if not r.get("ok")]
    for dtype_name, rows in results["sections"].get("inference", {}).items():
        if isinstance(rows, dict) and dtype_name == "float32":
            problems += [
                f"inference float32 {k}: batched != single"
                for k, v in rows.items()
                if not v["batched_equals_single"]
            ]
    fastv = results["sections"].get("fastv_sdpa", {})
    if fastv.get("ok") and not (fastv["sdpa_in_every_layer"] and fastv["later_layers_cache_fewer"]):
        problems.append("fastv_sdpa: not SDPA in every layer, or later layers cache every token")
    lora = results["sections"].get("lora_zero2", {})
    if lora.get("ok") and not (lora["returncode"] == 0 and lora.get("losses_finite")):
        problems.append(f"lora_zero2: exit {lora['returncode']}, losses {lora.get('losses')}")
    bench = results["sections"].get("bench_e2e", {})
    if bench.get("ok") and bench["returncode"] != 0:
        problems.append(f"bench_e2e: exit {bench['returncode']}")
    video = bench.get("video_visual_tokens")
    if bench.get("ok") and bench["returncode"] == 0 and (not video or video.get("none") != VIDEO_TOKENS):
        problems.append(f"bench_e2e: the video case did not run {VIDEO_TOKENS} visual tokens ({video})")
    atp = results["sections"].get("bench_atp", {})
    if atp.get("ok") and atp["returncode"] != 0:
        problems.append(f"bench_atp: exit {atp['returncode']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    from llava.tiny import build_tiny_llava

    args = parse_args(argv)
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; run with --smoke for the CPU version.", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else RESULTS / f"gpu_check_{'cpu_smoke' if args.smoke else 'cuda'}.json"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        build_tiny_llava(work / "tiny", reduction="none")
        ctx = {
            "device": device,
            "work": work,
            "tiny": work / "tiny",
            "bench_out": out.with_name(out.stem + "_bench_e2e.json"),
            "atp_out": out.with_name(out.stem + "_bench_atp.json"),
            "dtypes": ["float32", "bfloat16"] if args.smoke else ["float16", "bfloat16"],
        }
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        begin = time.perf_counter()
        sections = {
            name: run_section(name, globals()[name], ctx) for name in SECTIONS if name not in args.skip
        }
    results = {
        "machine": machine(),
        "smoke": args.smoke,
        "started": started,
        "sections": sections,
        "total_seconds": round(time.perf_counter() - begin, 1),
    }
    results["problems"] = verdict(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"[gpu_check] {len(results['problems'])} problem(s); wrote {out} in {results['total_seconds']} s")
    for problem in results["problems"]:
        print(f"[gpu_check] problem: {problem}")
    return 1 if results["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
