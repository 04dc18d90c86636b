"""Training start-up at the scale of LLaVA-1.5's 665K instruction mix: what a rank does before step 1.

Writes a synthetic dataset shaped like ``llava_v1_5_mix665k.json`` (by default 665,000 samples, 625,000
with an image; 1-6 rounds of question and answer, about 1.2 GB of JSON like the real file) and an image
folder whose files are hard links to a few small PNGs, then times, in one process:

1. building ``LazySupervisedDataset``: reading and validating every sample and checking that every
   image file exists (``--skip-image-check`` leaves the check out);
2. the modality lengths of every sample;
3. one epoch's order from ``--group_by_modality_length``'s sampler (``--batch`` x ``--world`` per step);
4. the first batch: ``--batch`` samples tokenised, their images loaded and pre-processed, collated.

Each step reports its wall time and the process's peak RSS after it. Results go to JSON
(``benchmarks/results/startup_cpu.json`` by default). The data is generated once into ``--work-dir``
and reused.

    python benchmarks/bench_startup.py                       # the full 665K (minutes, ~3 GB of disk)
    python benchmarks/bench_startup.py --samples 20000       # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

LINKS_PER_PNG = 50_000
RESULTS = Path(__file__).resolve().parent / "results"
WORDS = (
    "the a man woman dog cat red blue green table street sign car bus sky tree person holding "
    "standing sitting next to on in front of behind large small white black wooden picture"
).split()


def peak_rss_mib() -> float:
    """The process's peak resident set size so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def sample(rng: random.Random, index: int, with_image: bool) -> dict[str, Any]:
    """One LLaVA-mix-like sample: 1-6 rounds of question and answer, ``<image>`` in the first question."""
    turns = []
    for round_ in range(rng.randint(1, 6)):
        question = sentence(rng, rng.randint(6, 16))
        if round_ == 0 and with_image:
            question = "<image>\n" + question
        turns += [
            {"from": "human", "value": question},
            {"from": "gpt", "value": sentence(rng, rng.randint(20, 112))},
        ]
    record = {"id": f"{index:09d}", "conversations": turns}
    if with_image:
        record["image"] = f"coco/train2017/{index % 1000:03d}/{index:09d}.jpg"
    return record


def write_dataset(work: Path, samples: int, with_images: int, seed: int) -> tuple[Path, Path]:
    """``work/data.json`` and ``work/images`` (hard links to a few PNGs); reused when already complete."""
    from PIL import Image

    data, images, done = work / "data.json", work / "images", work / f"done-{samples}-{with_images}-{seed}"
    if done.is_file():
        return data, images
    rng = random.Random(seed)
    image_rows = set(rng.sample(range(samples), with_images))
    # file systems cap the hard links to one file (ext4: 65,000), so each PNG serves LINKS_PER_PNG images
    pngs = []
    for k in range(with_images // LINKS_PER_PNG + 1):
        pngs.append(work / f"one-{k}.png")
        Image.new("RGB", (64, 48), (120, 30, 200)).save(pngs[-1])
    with data.open("w", encoding="utf-8") as handle:
        handle.write("[")
        linked = 0
        for i in range(samples):
            record = sample(rng, i, i in image_rows)
            handle.write(("," if i else "") + json.dumps(record))
            if "image" in record:
                target = images / record["image"]
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    os.link(pngs[linked // LINKS_PER_PNG], target)
                linked += 1
        handle.write("]")
    done.write_text("ok")
    return data, images


def timed(name: str, steps: list[dict[str, Any]], fn):
    start = time.perf_counter()
    value = fn()
    steps.append(
        {
            "step": name,
            "seconds": round(time.perf_counter() - start, 2),
            "peak_rss_mib": round(peak_rss_mib()),
        }
    )
    print(f"[startup] {name}: {steps[-1]['seconds']} s, peak RSS {steps[-1]['peak_rss_mib']} MiB", flush=True)
    return value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=665_000)
    parser.add_argument(
        "--with-images", type=int, default=None, help="default: 94 %% of --samples (625K of 665K)"
    )
    parser.add_argument("--batch", type=int, default=16, help="per-device batch (the published recipe: 16)")
    parser.add_argument("--world", type=int, default=8, help="processes x accumulation of one global step")
    parser.add_argument("--skip-image-check", action="store_true")
    parser.add_argument("--work-dir", default=None, help="where the data is written (default: a temp folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "startup_cpu.json"))
    args = parser.parse_args(argv)
    with_images = args.with_images if args.with_images is not None else round(args.samples * 625 / 665)

    from llava.tiny import DEFAULT_CORPUS, save_image_processor
    from llava.tokenizer_train import train_sentencepiece_tokenizer
    from llava.train.data import DataCollatorForSupervisedDataset, LazySupervisedDataset
    from llava.train.llava_trainer import ModalityLengthGroupedSampler

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-startup-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data, images = write_dataset(work, args.samples, with_images, args.seed)
    written = round(time.perf_counter() - start, 1)
    print(f"[startup] data: {data} ({data.stat().st_size / 2**30:.2f} GiB), written or reused in {written} s")
    tokenizer = train_sentencepiece_tokenizer([*DEFAULT_CORPUS, *(" ".join(WORDS),) * 4], work / "tokenizer")
    save_image_processor(work / "processor")
    from llava.mm_utils import load_image_processor

    processor = load_image_processor(str(work / "processor"))
    steps: list[dict[str, Any]] = []
    rss_before = round(peak_rss_mib())
    dataset = timed(
        "dataset build (read, validate, image check)",
        steps,
        lambda: LazySupervisedDataset(
            str(data), tokenizer, processor, "v1", str(images), "pad", check_images=not args.skip_image_check
        ),
    )
    lengths = timed("modality lengths", steps, lambda: dataset.modality_lengths)
    sampler = ModalityLengthGroupedSampler(lengths, args.batch, args.world, seed=args.seed)
    order = timed("sampler: one epoch's order", steps, lambda: list(iter(sampler)))
    collate = DataCollatorForSupervisedDataset(pad_token_id=tokenizer.pad_token_id)
    batch = timed("first batch", steps, lambda: collate([dataset[i] for i in order[: args.batch]]))
    results = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "config": {
            "samples": args.samples,
            "with_images": with_images,
            "batch": args.batch,
            "world": args.world,
            "image_check": not args.skip_image_check,
            "json_gib": round(data.stat().st_size / 2**30, 3),
        },
        "peak_rss_mib_before": rss_before,
        "steps": steps,
        "total_seconds": round(sum(step["seconds"] for step in steps), 2),
        "checks": {
            "samples": len(dataset),
            "order_is_a_permutation": sorted(order) == list(range(len(dataset))),
            "first_batch_images": int(batch["images"].shape[0]) if "images" in batch else 0,
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"[startup] total {results['total_seconds']} s; wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
