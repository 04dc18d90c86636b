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

A Video-LLaVA checkpoint (recognised by its ``config.json``) gets a video input instead (a video file
that PyAV or decord can read); the answer comes with a strip of the 8 frames as the video tower sees them,
each with its kept patches bright, and the tokens of the video and of each frame. The ``--video-*`` /
``--iqr-scope`` / ``--drop-cls`` flags set the video options (see docs/Video.md)::

    python -m llava.serve.gradio_demo --model-path Video-LLaVA-7B --video-tower LanguageBind_Video_merge \\
        --token-reduction prumerge

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
from llava.model.token_reduction.registry import get_reducer
from llava.prompting import (
    VIDEO_CONV_MODE,
    check_generation_args,
    generation_kwargs,
    prompt_ids,
    video_prompt_ids,
)
from llava.serve.video import (
    add_video_args,
    frame_tokens,
    load_video_model,
    read_video,
    video_layout,
    video_pixels,
    video_views,
)

CHECKPOINT = "checkpoint"
INSTALL_HINT = 'The web demo needs Gradio: pip install "llava-prumerge[demo]"'
DIM = 0.3  # brightness of the patches whose tokens were dropped
FRAME_GAP = 4  # pixels between the frames of a video's strip


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


def frame_strip(frames: list[Image.Image], gap: int = FRAME_GAP) -> Image.Image:
    """The frames side by side on white, ``gap`` pixels apart."""
    width = sum(frame.width for frame in frames) + gap * (len(frames) - 1)
    strip = Image.new("RGB", (width, max(frame.height for frame in frames)), (255, 255, 255))
    x = 0
    for frame in frames:
        strip.paste(frame, (x, 0))
        x += frame.width + gap
    return strip


@dataclass
class DemoModel:
    """A loaded checkpoint and the settings every question uses (``video``: a Video-LLaVA checkpoint)."""

    tokenizer: Any
    model: Any
    image_processor: Any
    context_len: int
    default_reduction: ReductionConfig
    conv_mode: str
    temperature: float = 0.2
    max_new_tokens: int = 512
    video: bool = False

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

    def answer_video(
        self,
        video: str | None,
        question: str,
        reduction: str | None = CHECKPOINT,
        budget: int | None = None,
    ) -> tuple[str, Image.Image, str]:
        """Answers ``question`` about the video file ``video`` with the chosen reducer (run on each frame).

        Returns:
            ``(answer text, strip of the frames with the kept patches bright, visual-token count text)``.

        Raises:
            ValueError: no video or an unreadable one, an empty question, an invalid reduction or a prompt
            that does not fit.
        """
        if not video:
            raise ValueError("Upload a video first.")
        if not question or not question.strip():
            raise ValueError("Type a question about the video.")
        config = self.reduction_for(reduction, budget)
        try:
            frames = read_video(video, self.model.get_video_tower().num_frames)
        except (OSError, ImportError) as err:
            raise ValueError(str(err)) from err
        with self.lock, torch.no_grad():
            resolved = self.model.set_token_reduction(config)
            return self._answer_video(frames, question.strip(), resolved)

    def _answer_video(
        self, frames: Any, question: str, reduction: ReductionConfig
    ) -> tuple[str, Image.Image, str]:
        """``answer_video`` once the reducer is set (the caller holds the lock)."""
        model, tower = self.model, self.model.get_video_tower()
        pixels = video_pixels(frames, tower).to(dtype=model.dtype)  # [1, 3, T, S, S]
        tokens = frame_tokens(tower, pixels)
        input_ids = video_prompt_ids(self.tokenizer, question, tower.num_frames, self.conv_mode)[None]
        input_ids = input_ids.to(model.device)
        room = self.context_len - (input_ids.shape[1] - tower.num_frames + tokens.total)
        if room < 1:
            raise ValueError(f"The prompt does not fit in the model's context of {self.context_len} tokens.")
        spliced = model.prepare_multimodal_inputs(input_ids, None, videos=pixels, padding_side="left")
        kwargs = generation_kwargs(self.tokenizer, min(self.max_new_tokens, room), self.temperature)
        new_tokens = model.generate_spliced(spliced, **kwargs)
        text = self.tokenizer.decode(new_tokens[0], skip_special_tokens=True).strip()
        views = [Image.fromarray(view) for view in video_views(pixels)]
        strip = frame_strip(
            [kept_overlay(v, torch.tensor(k), tower.grid) for v, k in zip(views, tokens.kept)]
        )
        everything = tower.num_frames * (tower.num_patches + int(tower.keep_cls))
        per_frame = " ".join(str(n) for n in tokens.counts)
        count = (
            f"{tokens.total} / {everything} visual tokens ({reduction.describe()}); per frame: {per_frame}"
        )
        return text or "(empty answer)", strip, count

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
    add_video_args(parser)
    return parser


def load_demo_model(args: argparse.Namespace) -> DemoModel:
    """Checks the options and loads the checkpoint in ``--dtype`` (with any reduction override) for the demo."""
    from llava.model.loader import load_pretrained_model

    device = check_generation_args(args)
    if video_layout(args.model_path) is not None:
        return load_video_demo_model(args, device)
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


def load_video_demo_model(args: argparse.Namespace, device: str) -> DemoModel:
    """:func:`load_demo_model` for a Video-LLaVA checkpoint (with the ``--video-*`` options)."""
    if args.model_base is not None:
        raise ValueError("--model-base is for LoRA and projector-only image checkpoints, not Video-LLaVA.")
    tokenizer, model, _, context_len = load_video_model(args, device, resolve_dtype(args.dtype, device))
    return DemoModel(
        tokenizer=tokenizer,
        model=model,
        image_processor=None,
        context_len=int(context_len),
        default_reduction=ReductionConfig.from_value(model.config.mm_token_reduction),
        conv_mode=args.conv_mode or VIDEO_CONV_MODE,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        video=True,
    )


def reducer_choices(video: bool) -> list[str]:
    """The dropdown's reducers: all of them, or for videos those that run in the tower (not FastV, ATP)."""
    from llava.model import available_reducers

    names = available_reducers()
    return [name for name in names if not get_reducer(name).in_llm] if video else names


def build_app(demo_model: DemoModel, gr: Any | None = None) -> Any:
    """The Gradio ``Blocks`` app around ``demo_model.answer`` (``answer_video`` for a video model; not launched)."""
    gr = gr or import_gradio()
    answer_fn = demo_model.answer_video if demo_model.video else demo_model.answer
    name, what = ("Video-LLaVA", "a video") if demo_model.video else ("LLaVA-1.5", "an image")

    def on_ask(media, question, reduction, budget):
        try:
            return answer_fn(media, question, reduction, int(budget or 0))
        except ValueError as err:
            raise gr.Error(str(err)) from err

    with gr.Blocks(title=f"{name} + PruMerge") as app:
        gr.Markdown(f"## {name} + PruMerge\nUpload {what}, ask a question; dimmed patches were dropped.")
        with gr.Row():
            with gr.Column():
                if demo_model.video:  # a file path; include_audio keeps Gradio from re-encoding with ffmpeg
                    media = gr.Video(label="Video", elem_id="video", sources=["upload"], include_audio=True)
                else:
                    media = gr.Image(type="pil", label="Image", elem_id="image")
                question = gr.Textbox(label="Question", elem_id="question", lines=2)
                reduction = gr.Dropdown(
                    [CHECKPOINT, *reducer_choices(demo_model.video)],
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
        inputs = [media, question, reduction, budget]
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
