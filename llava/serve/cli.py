"""Chat with a LLaVA-1.5 checkpoint about one image, or a Video-LLaVA one about a video, in the terminal
(upstream's ``llava.serve.cli``).

Interactive (no ``--query``): type a message after ``USER:``; the image goes with the first message and
every answer stays in the conversation, so later questions can refer to earlier ones. An empty line,
``exit`` or end of input (Ctrl-D) ends the chat::

    python -m llava.serve.cli --model-path liuhaotian/llava-v1.5-7b --image-file view.jpg

One question, answer printed, exit 0::

    python -m llava.serve.cli --model-path CKPT --image-file view.jpg --query "What is in the image?"

Before the first answer one line reports how many visual tokens the image kept, e.g.
``[llava] image: 3 x 336 x 336 -> 40 visual tokens (prumerge/reference)``. The token reduction is the
checkpoint's own unless a ``--token-reduction`` / ``--reduction-*`` flag changes part of it.
``--dtype`` picks the precision (``auto``: float16 on CUDA, float32 on CPU; see :mod:`llava.dtypes`).

A video (``--video-file``: a video file, a folder of frame images or a ``.npy`` array, read as
:func:`llava.video.load_video` reads it) needs a Video-LLaVA checkpoint (recognised by its ``config.json``);
its 8 frames go with the first message, under Video-LLaVA's ``llava_v1`` template, and before the chat one
line reports the tokens of the whole video and of each frame, e.g.
``[llava] video: 8 frames x 3 x 224 x 224 -> 272 visual tokens (prumerge/reference/budget=33); per frame:
34 34 34 34 34 34 34 34``. The ``--video-*`` / ``--iqr-scope`` / ``--drop-cls`` flags set the video
options (see docs/Video.md)::

    python -m llava.serve.cli --model-path Video-LLaVA-7B --video-tower LanguageBind_Video_merge \\
        --video-file clip.mp4 --token-reduction prumerge

User mistakes (a missing image or video, an unknown reducer, a LoRA folder without ``--model-base``, a
video for an image checkpoint or an image for a video one ...) print ``error: ...`` to stderr and exit
with status 2.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

import torch

from llava.conversation import Conversation, conv_mode_for_model, conv_templates, get_conv_template
from llava.dtypes import add_dtype_arg, resolve_dtype
from llava.mm_utils import get_model_name_from_path, load_image, process_images
from llava.model.token_reduction.args import add_reduction_args, reduction_changes
from llava.model.token_reduction.config import ReductionConfig
from llava.prompting import (
    VIDEO_CONV_MODE,
    check_generation_args,
    conversation_ids,
    generation_kwargs,
    with_image,
)
from llava.serve.video import (
    VIDEO_SOURCES_HELP,
    FrameTokens,
    add_video_args,
    check_media,
    describe_video,
    frame_tokens,
    load_video_model,
    read_video,
    video_pixels,
)

EXIT_WORDS = ("exit", "quit")
USAGE_ERROR = 2


class ConversationTooLong(ValueError):
    """The prompt no longer leaves room for an answer within the model's context length."""


def build_parser() -> argparse.ArgumentParser:
    """The command-line options (upstream's plus the token-reduction overrides)."""
    parser = argparse.ArgumentParser(
        prog="python -m llava.serve.cli",
        description="Chat with a LLaVA-1.5 (+ PruMerge) checkpoint about one image, or a Video-LLaVA one about a video.",
    )
    parser.add_argument("--model-path", required=True, help="checkpoint folder or Hub id")
    parser.add_argument(
        "--model-base", default=None, help="base LLM, for LoRA and projector-only checkpoints"
    )
    media = parser.add_mutually_exclusive_group(required=True)
    media.add_argument("--image-file", help="image file or http(s) URL")
    media.add_argument("--video-file", help=f"for a Video-LLaVA checkpoint: {VIDEO_SOURCES_HELP}")
    parser.add_argument("--query", default=None, help="ask this one question, print the answer and exit")
    parser.add_argument(
        "--conv-mode",
        default=None,
        choices=sorted(conv_templates),
        help=f"conversation template (default: {VIDEO_CONV_MODE} for videos, else chosen from the model name)",
    )
    parser.add_argument("--temperature", type=float, default=0.2, help="0 = greedy decoding")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    add_dtype_arg(parser)
    add_reduction_args(parser)
    add_video_args(parser)
    return parser


def describe_image(pixels: torch.Tensor, num_tokens: int, reduction: ReductionConfig) -> str:
    """The one-line report, e.g. ``[llava] image: 3 x 336 x 336 -> 40 visual tokens (prumerge/reference)``."""
    shape = " x ".join(str(size) for size in pixels.shape[1:])
    return f"[llava] image: {shape} -> {num_tokens} visual tokens ({reduction.describe()})"


@dataclass
class ChatSession:
    """A loaded model, one preprocessed image or video and the conversation so far.

    ``frames`` is set for a video: what the tower kept of each frame (read once, when the session opens).
    """

    tokenizer: Any
    model: Any
    pixels: torch.Tensor  # [1, 3, H, W] image or [1, 3, T, S, S] video, on the model's device and dtype
    conv: Conversation
    reduction: ReductionConfig
    context_len: int
    temperature: float = 0.2
    max_new_tokens: int = 512
    reported: bool = False
    frames: FrameTokens | None = None

    def report(self, num_visual_tokens: int | None = None) -> None:
        """Prints the visual-token line once (for an image, ``num_visual_tokens`` from the spliced prompt)."""
        if self.reported:
            return
        if self.frames is not None:
            print(describe_video(self.pixels, self.frames, self.reduction), flush=True)
        else:
            print(describe_image(self.pixels, int(num_visual_tokens), self.reduction), flush=True)
        self.reported = True

    def ask(self, text: str, streamer: Any = None) -> str:
        """Adds ``text`` as the user's turn, generates the answer, records it and returns it (stripped).

        The image (or video: one ``<image>`` placeholder that its frames' tokens replace, one after the
        other) goes with the first message. Prints the visual-token line before the first answer.
        """
        first = not self.conv.messages
        self.conv.append_message(self.conv.roles[0], with_image(text, first))
        self.conv.append_message(self.conv.roles[1], None)
        try:
            inputs, max_new_tokens = self._spliced_prompt()
        except ConversationTooLong:
            del self.conv.messages[-2:]
            raise
        self.report(int(inputs.num_visual_tokens[0]))
        kwargs = generation_kwargs(self.tokenizer, max_new_tokens, self.temperature)
        new_tokens = self.model.generate_spliced(inputs, streamer=streamer, **kwargs)
        answer = self.tokenizer.decode(new_tokens[0], skip_special_tokens=True).strip()
        self.conv.messages[-1][1] = answer
        return answer

    def _spliced_prompt(self) -> tuple[Any, int]:
        """The conversation's prompt with the image spliced in, and the new tokens it leaves room for."""
        input_ids = conversation_ids(self.conv, self.tokenizer)[None].to(self.model.device)
        media = {"images": self.pixels} if self.frames is None else {"videos": self.pixels}
        with torch.no_grad():
            inputs = self.model.prepare_multimodal_inputs(
                input_ids, torch.ones_like(input_ids), padding_side="left", **media
            )
        room = self.context_len - inputs.inputs_embeds.shape[1]
        if bool(inputs.truncated.any()) or room < 1:
            raise ConversationTooLong(
                f"The conversation no longer fits in the model's context of {self.context_len} tokens "
                "(visual tokens included); start a new chat."
            )
        return inputs, min(self.max_new_tokens, room)


def open_session(args: argparse.Namespace) -> ChatSession:
    """Checks the options, reads the image or video, loads the model (and reduction), starts a conversation.

    Raises:
        ValueError, OSError: user mistakes (bad option, missing image, video or checkpoint, LoRA without
        base, a video for an image checkpoint or the reverse).
        ImportError: no decoder installed for a video file.
    """
    from llava.model.loader import load_pretrained_model

    device = check_generation_args(args)
    if args.video_file is not None:
        return open_video_session(args, device)
    conv = get_conv_template(args.conv_mode or conv_mode_for_model(get_model_name_from_path(args.model_path)))
    image = load_image(args.image_file)  # before the (slow) model load, so a typo fails at once
    check_media(args.model_path, video=False)
    tokenizer, model, image_processor, context_len = load_pretrained_model(
        args.model_path,
        args.model_base,
        device=device,
        dtype=resolve_dtype(args.dtype, device),
        reduction_changes=reduction_changes(args),
    )
    reduction = model.token_reduction
    pixels = process_images([image], image_processor, model.config.image_aspect_ratio)
    return ChatSession(
        tokenizer=tokenizer,
        model=model,
        pixels=pixels.to(device=model.device, dtype=model.dtype),
        conv=conv,
        reduction=reduction,
        context_len=int(context_len),
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
    )


def open_video_session(args: argparse.Namespace, device: str) -> ChatSession:
    """:func:`open_session` for ``--video-file``: a Video-LLaVA checkpoint and the video's frames."""
    if args.model_base is not None:
        raise ValueError("--model-base is for LoRA and projector-only image checkpoints, not Video-LLaVA.")
    frames = read_video(args.video_file)  # before the (slow) model load, so a bad video fails at once
    check_media(args.model_path, video=True)
    tokenizer, model, _, context_len = load_video_model(args, device, resolve_dtype(args.dtype, device))
    tower = model.get_video_tower()
    if len(frames) != tower.num_frames:
        frames = read_video(args.video_file, tower.num_frames)
    pixels = video_pixels(frames, tower).to(dtype=model.dtype)
    return ChatSession(
        tokenizer=tokenizer,
        model=model,
        pixels=pixels,
        conv=get_conv_template(args.conv_mode or VIDEO_CONV_MODE),
        reduction=model.video_reduction,
        context_len=int(context_len),
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        frames=frame_tokens(tower, pixels),
    )


def read_message(prompt: str) -> str | None:
    """One user message from stdin, or None at end of input, on an empty line or ``exit``/``quit``.

    Input that does not come from a terminal is echoed, so a piped transcript reads like a chat.
    """
    try:
        text = input(prompt)
    except EOFError:
        print()
        return None
    if not sys.stdin.isatty():
        print(text)
    text = text.strip()
    return None if not text or text.lower() in EXIT_WORDS else text


class AnswerStreamer:
    """Prints each answer as it is generated, after an ``ASSISTANT: `` prefix.

    The prefix is printed when generation starts, so on the first turn it follows the visual-token line.
    """

    def __init__(self, tokenizer: Any, prefix: str) -> None:
        from transformers import TextStreamer

        self.text = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.prefix = prefix
        self.started = False

    def put(self, value: torch.Tensor) -> None:
        if not self.started:
            print(self.prefix, end="", flush=True)
            self.started = True
        self.text.put(value)

    def end(self) -> None:
        self.text.end()
        self.started = False


def chat(session: ChatSession) -> int:
    """The interactive loop: ``USER:`` prompts and streamed ``ASSISTANT:`` answers until the user stops."""
    user, assistant = session.conv.roles
    streamer = AnswerStreamer(session.tokenizer, f"{assistant}: ")
    while (text := read_message(f"{user}: ")) is not None:
        session.ask(text, streamer=streamer)
    print("exit...")
    return 0


def fail(err: Exception) -> int:
    """Reports a user mistake on stderr (no traceback); returns the exit status 2."""
    print(f"error: {err}", file=sys.stderr)
    return USAGE_ERROR


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; returns the exit status (0 ok, 2 user error, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        session = open_session(args)
    except (OSError, ValueError, ImportError) as err:
        return fail(err)
    if session.frames is not None:
        session.report()  # a video's counts are known before the first question
    try:
        if args.query is None:
            return chat(session)
        print(session.ask(args.query))
        return 0
    except ConversationTooLong as err:
        return fail(err)
    except KeyboardInterrupt:
        print()
        return 130


if __name__ == "__main__":
    sys.exit(main())
