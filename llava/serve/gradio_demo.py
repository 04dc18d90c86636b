"""A web demo: ask a LLaVA-1.5 (+ PruMerge) checkpoint about an image and see which visual tokens it kept.

::

    pip install "llava-prumerge[demo]"
    python -m llava.serve.gradio_demo --model-path liuhaotian/llava-v1.5-7b --token-reduction prumerge

Open http://127.0.0.1:7860, upload an image, type a question and press *Ask*. Next to the answer the
page shows the image as the vision tower sees it (padded to a square, resized) with the patches whose
tokens were kept at full brightness and the others dimmed, and the number of visual tokens the language
model received. The *Token reduction* dropdown switches the reducer per question; ``checkpoint`` is the
one the demo started with (the checkpoint's own, changed by any ``--token-reduction`` /
``--reduction-*`` flag). Each question is a fresh one-turn conversation. ``--dtype`` picks the precision
(``auto``: float16 on CUDA, float32 on CPU).

Gradio is optional and imported only here; without it the demo exits with an install hint.
"""

from __future__ import annotations

import argparse
import sys
import threading
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageEnhance

from llava.conversation import conv_mode_for_model, conv_templates
from llava.dtypes import add_dtype_arg, resolve_dtype
from llava.mm_utils import expand2square, get_model_name_from_path, process_images
from llava.model.token_reduction.args import (
    add_reduction_args,
    apply_changes,
    option_specs,
    reduction_changes,
)
from llava.model.token_reduction.config import ReductionConfig
from llava.prompting import check_generation_args, generation_kwargs, prompt_ids

CHECKPOINT = "checkpoint"
INSTALL_HINT = 'The web demo needs Gradio: pip install "llava-prumerge[demo]"'
DIM = 0.3  # brightness of the patches whose tokens were dropped


def import_gradio() -> Any:
    """The ``gradio`` module; exits with an install hint (status 2) when it is not installed."""
    try:
        import gradio
    except ImportError:
        print(f"error: {INSTALL_HINT}", file=sys.stderr)
        raise SystemExit(2) from None
    return gradio


def kept_overlay(
    image: Image.Image, indices: torch.Tensor, grid: tuple[int, int], dim: float = DIM
) -> Image.Image:
    """``image`` with the grid cells not listed in ``indices`` dimmed to ``dim`` brightness.

    Args:
        image: the square image as the tower sees it (already padded and resized).
        indices: ``[M]`` row-major patch indices of the kept tokens; negative entries are ignored.
        grid: ``(rows, cols)`` of the tower's patch grid.
        dim: brightness factor of the dropped cells (0 black, 1 unchanged).
    """
    rows, cols = grid
    width, height = image.size
    mask = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(mask)
    for index in {int(i) for i in indices.tolist() if i >= 0}:
        row, col = divmod(index, cols)
        box = (
            col * width // cols,
            row * height // rows,
            (col + 1) * width // cols,
            (row + 1) * height // rows,
        )
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
    dimmed = ImageEnhance.Brightness(image).enhance(dim)
    return Image.composite(image, dimmed, mask)


def tower_view(image: Image.Image, image_processor: Any, size: int, aspect_ratio: str | None) -> Image.Image:
    """The RGB image padded to a square (for ``"pad"``, in the processor's mean colour) and resized to ``size``."""
    image = image.convert("RGB")
    if aspect_ratio == "pad":
        image = expand2square(image, tuple(int(x * 255) for x in image_processor.image_mean))
    return image.resize((size, size), Image.Resampling.BICUBIC)


@dataclass
class DemoModel:
    """A loaded checkpoint and the settings every question uses."""

    tokenizer: Any
    model: Any
    image_processor: Any
    context_len: int
    default_reduction: ReductionConfig
    conv_mode: str
    temperature: float = 0.2
    max_new_tokens: int = 512

    def __post_init__(self) -> None:
        self.lock = threading.Lock()  # the reducer is model state: one question at a time

    def reduction_for(self, choice: str | None, budget: int | None = None) -> ReductionConfig:
        """The reduction a dropdown choice (a reducer name or ``checkpoint``) and budget (0/None: none) name."""
        changes: dict[str, Any] = {} if not choice or choice == CHECKPOINT else {"method": choice}
        if budget:
            changes["budget"] = int(budget)  # replaces a recorded ratio too
        return apply_changes(self.default_reduction, changes)

    def answer(
        self,
        image: Image.Image | None,
        question: str,
        reduction: str | None = CHECKPOINT,
        budget: int | None = None,
    ) -> tuple[str, Image.Image, str]:
        """Answers ``question`` about ``image`` with the chosen reducer.

        Returns:
            ``(answer text, kept-token overlay, visual-token count text)``.

        Raises:
            ValueError: no image, an empty question, an invalid reduction or a prompt that does not fit.
        """
        if image is None:
            raise ValueError("Upload an image first.")
        if not question or not question.strip():
            raise ValueError("Type a question about the image.")
        config = self.reduction_for(reduction, budget)
        with self.lock, torch.no_grad():
            self.model.set_token_reduction(config)
            return self._answer(image, question.strip(), config)

    def _answer(
        self, image: Image.Image, question: str, config: ReductionConfig
    ) -> tuple[str, Image.Image, str]:
        """``answer`` once the reducer is set (the caller holds the lock)."""
        model, tower = self.model, self.model.get_vision_tower()
        aspect = model.config.image_aspect_ratio
        pixels = process_images([image.convert("RGB")], self.image_processor, aspect)
        pixels = pixels.to(device=model.device, dtype=model.dtype)
        out = tower(pixels)
        count = int(out.lengths[0])
        input_ids = self._prompt_ids(question)
        room = self.context_len - (input_ids.shape[1] - 1 + count)
        if room < 1:
            raise ValueError(f"The prompt does not fit in the model's context of {self.context_len} tokens.")
        kwargs = generation_kwargs(self.tokenizer, min(self.max_new_tokens, room), self.temperature)
        new_tokens = model.generate(
            input_ids, images=pixels, attention_mask=torch.ones_like(input_ids), **kwargs
        )
        text = self.tokenizer.decode(new_tokens[0], skip_special_tokens=True).strip()
        view = tower_view(image, self.image_processor, pixels.shape[-1], aspect)
        overlay = kept_overlay(view, out.indices[0], tower.grid)
        return text or "(empty answer)", overlay, count_text(count, tower.num_patches, config)

    def _prompt_ids(self, question: str) -> torch.Tensor:
        """``[1, T]`` token ids of a one-turn prompt with the image marker before the question."""
        ids = prompt_ids(self.tokenizer, question, self.conv_mode, image=True)
        return ids[None].to(self.model.device)


def count_text(count: int, num_patches: int, reduction: ReductionConfig) -> str:
    """E.g. ``40 / 576 visual tokens (prumerge/reference)``, with a note for in-LLM methods (FastV)."""
    text = f"{count} / {num_patches} visual tokens ({reduction.describe()})"
    if reduction.in_llm:
        text += f"; pruned inside the language model after layer {reduction.llm_layer}"
    return text


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m llava.serve.gradio_demo",
        description="Web demo: chat with a LLaVA-1.5 (+ PruMerge) checkpoint and see the kept visual tokens.",
    )
    parser.add_argument("--model-path", required=True, help="checkpoint folder or Hub id")
    parser.add_argument(
        "--model-base", default=None, help="base LLM, for LoRA and projector-only checkpoints"
    )
    parser.add_argument("--conv-mode", default=None, choices=sorted(conv_templates))
    parser.add_argument("--temperature", type=float, default=0.2, help="0 = greedy decoding")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    add_dtype_arg(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    add_reduction_args(parser)
    return parser


def load_demo_model(args: argparse.Namespace) -> DemoModel:
    """Checks the options and loads the checkpoint in ``--dtype`` (with any reduction override) for the demo."""
    from llava.model.loader import load_pretrained_model

    device = check_generation_args(args)
    tokenizer, model, image_processor, context_len = load_pretrained_model(
        args.model_path,
        args.model_base,
        device=device,
        dtype=resolve_dtype(args.dtype, device),
        reduction_changes=reduction_changes(args),
    )
    reduction = model.token_reduction
    return DemoModel(
        tokenizer=tokenizer,
        model=model,
        image_processor=image_processor,
        context_len=int(context_len),
        default_reduction=reduction,
        conv_mode=args.conv_mode or conv_mode_for_model(get_model_name_from_path(args.model_path)),
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
    )


def build_app(demo_model: DemoModel, gr: Any | None = None) -> Any:
    """The Gradio ``Blocks`` app around ``demo_model.answer`` (not launched)."""
    from llava.model import available_reducers

    gr = gr or import_gradio()

    def on_ask(image, question, reduction, budget):
        try:
            return demo_model.answer(image, question, reduction, int(budget or 0))
        except ValueError as err:
            raise gr.Error(str(err)) from err

    with gr.Blocks(title="LLaVA-1.5 + PruMerge") as app:
        gr.Markdown("## LLaVA-1.5 + PruMerge\nUpload an image, ask a question; dimmed patches were dropped.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label="Image", elem_id="image")
                question = gr.Textbox(label="Question", elem_id="question", lines=2)
                reduction = gr.Dropdown(
                    [CHECKPOINT, *available_reducers()],
                    value=CHECKPOINT,
                    label="Token reduction",
                    info=f"{CHECKPOINT} = {demo_model.default_reduction.describe()}",
                    elem_id="reduction",
                )
                budget = gr.Number(
                    value=0, precision=0, minimum=0, label="Token budget", info=option_specs()["budget"].help
                )
                ask = gr.Button("Ask", variant="primary", elem_id="ask")
            with gr.Column():
                answer = gr.Textbox(label="Answer", elem_id="answer", lines=4, interactive=False)
                overlay = gr.Image(
                    type="pil", label="Kept visual tokens", elem_id="overlay", interactive=False
                )
                count = gr.Textbox(label="Visual tokens", elem_id="count", interactive=False)
        inputs = [image, question, reduction, budget]
        ask.click(on_ask, inputs, [answer, overlay, count])
        question.submit(on_ask, inputs, [answer, overlay, count])
    return app


def main(argv: list[str] | None = None) -> int:
    """Loads the model and serves the demo until interrupted; returns the exit status."""
    args = build_parser().parse_args(argv)
    gr = import_gradio()  # before the (slow) model load
    try:
        demo_model = load_demo_model(args)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    build_app(demo_model, gr).queue().launch(server_name=args.host, server_port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
