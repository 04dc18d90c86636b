"""Small helpers shared by test modules (the shared fixtures' location, prompts and padding)."""

import os
from pathlib import Path

import pytest
import torch

from llava import prompting
from llava.prompting import left_pad as pad_left  # noqa: F401 - the tests' name for the one left padding

# The workspace's read-only fixtures (the authors' PruMerge outputs, the real LLaVA-1.5 eval files): the
# folder "shared" beside the clone, or LLAVA_SHARED_DIR. A user's clone has neither; the tests that need
# them skip with SHARED_SKIP in their reason, and conftest.py counts those skips in the summary.
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LLAVA_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared")
SHARED_SKIP = "needs the shared fixtures"


def shared_reason(folder: Path, what: str) -> str:
    return f"{SHARED_SKIP} ({what}), absent at {folder}"


def needs_shared(folder: Path, what: str) -> pytest.MarkDecorator:
    """Skips the test (or module, as ``pytestmark``) when ``folder`` of the shared fixtures is absent."""
    return pytest.mark.skipif(not folder.is_dir(), reason=shared_reason(folder, what))


def prompt_ids(tokenizer, question: str, image: bool = True) -> torch.Tensor:
    """The vicuna_v1 generation prompt for ``question`` (with ``<image>`` first), tokenised, as inference builds it."""
    return prompting.prompt_ids(tokenizer, question, "vicuna_v1", image=image)


def train_args(root, base, clip, out, *extra) -> list[str]:
    """``llava/train/train.py`` flags for the ``train_workspace`` fixture on the CPU (no checkpoints unless
    ``extra`` asks for them)."""
    return [
        "--model_name_or_path",
        str(base),
        "--vision_tower",
        str(clip),
        "--data_path",
        str(root / "data.json"),
        "--image_folder",
        str(root / "images"),
        "--mm_projector_type",
        "mlp2x_gelu",
        "--image_aspect_ratio",
        "pad",
        "--output_dir",
        str(out),
        "--per_device_train_batch_size",
        "4",
        "--logging_steps",
        "1",
        "--report_to",
        "none",
        "--model_max_length",
        "1024",
        "--dataloader_num_workers",
        "0",
        "--seed",
        "0",
        "--use_cpu",
        "True",
        "--save_strategy",
        "no",
        *extra,
    ]


def recompute_greedy(model, ids, mask, pixels, steps):
    """Greedy decoding that recomputes the whole sequence at every step (no KV cache), for in-LLM methods:
    the query index stays the last prompt token, as at generation."""
    with torch.no_grad():
        spliced = model.prepare_multimodal_inputs(ids, mask, pixels, padding_side="left")
        embeds, valid, visual = spliced.inputs_embeds, spliced.attention_mask, spliced.visual_mask
        query = embeds.shape[1] - 1  # the last prompt token; generated tokens are not prompt text
        tokens = []
        for _ in range(steps):
            logits = model(
                inputs_embeds=embeds,
                attention_mask=valid,
                visual_mask=visual,
                query_index=query,
                use_cache=False,
            ).logits
            nxt = logits[:, -1].argmax(-1)  # [B]
            tokens.append(nxt)
            embeds = torch.cat([embeds, model.get_input_embeddings()(nxt)[:, None]], dim=1)
            valid = torch.cat([valid, valid.new_ones(len(nxt), 1)], dim=1)
            visual = torch.cat([visual, visual.new_zeros(len(nxt), 1)], dim=1)
    return torch.stack(tokens, dim=1)
