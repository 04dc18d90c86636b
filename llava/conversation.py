"""Conversation templates of LLaVA-1.5 (names and strings as in upstream LLaVA).

Only the templates LLaVA-1.5 needs are shipped:

- ``vicuna_v1`` (alias ``v1``, i.e. upstream ``--version v1``): instruction tuning and every eval script.
- ``llava_v1``: what upstream's CLI picks for model names containing "v1"; differs only in the system text.
- ``plain``: pretraining of the projector (image followed by its caption).

Example (``vicuna_v1``, one turn, generation prompt)::

    A chat between ... user's questions. USER: <image>\\nWhat is this? ASSISTANT:
"""

from __future__ import annotations

import dataclasses
from copy import deepcopy
from enum import Enum, auto

from llava.constants import DEFAULT_IMAGE_TOKEN


class SeparatorStyle(Enum):
    """How the messages of a conversation are joined into one prompt string."""

    TWO = auto()
    PLAIN = auto()


@dataclasses.dataclass
class Conversation:
    """A chat template plus the messages appended so far.

    ``messages`` holds ``[role, text]`` pairs; a text of ``None`` marks the turn the model should write
    (the prompt then ends with ``ROLE:``).
    """

    system: str
    roles: tuple[str, str]
    messages: list[list[str | None]]
    sep_style: SeparatorStyle
    sep: str
    sep2: str | None = None
    version: str = "Unknown"

    def copy(self) -> Conversation:
        """Return an independent copy (the message list is copied too)."""
        return dataclasses.replace(self, messages=deepcopy(self.messages))

    def append_message(self, role: str, message: str | None) -> None:
        """Append one turn; ``message=None`` leaves the turn open for generation."""
        if role not in self.roles:
            raise ValueError(f"Unknown role {role!r}; this template's roles are {self.roles}")
        self.messages.append([role, message])

    def get_prompt(self) -> str:
        """Render the conversation into the prompt string the model sees (the text of :meth:`render`).

        Returns:
            The prompt string (``<image>`` stays a literal; see ``mm_utils.tokenizer_image_token``).
        """
        return self.render()[0]

    def render(self) -> tuple[str, list[tuple[int, int]]]:
        """The prompt string and, for each message, the character span ``[begin, end)`` it occupies.

        One renderer for inference (the prompt) and training (the spans of the answers are the loss).

        ``TWO``: ``{system} USER: {q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT:`` -- the system text and
        ``sep``, then each turn as ``ROLE: text`` followed by ``sep`` after user turns and ``sep2`` after
        assistant turns; an open turn (``None``) renders ``ROLE:`` with no trailing space, an empty one
        (``""``) ``ROLE: `` and its separator, as training renders an empty answer. A message's
        span starts at the space after ``ROLE:`` and ends after its separator (Llama's tokenizers fold
        that space into the message's first token, so a token-level label never straddles the boundary).
        If the first turn contains ``<image>``, every ``<image>`` is removed from it, the rest is
        stripped and ``<image>\\n`` is put in front, so the image always comes first.

        ``PLAIN``: each turn's text followed by ``sep``; no system text, no roles, open turns render
        nothing. A first turn containing ``<image>`` renders as exactly ``<image>`` with no separator
        (its other text is dropped), so ``[<image>, caption]`` gives ``<image>caption\\n``, the text of
        upstream's pretraining samples.

        Returns:
            ``(prompt, spans)`` with one span per message (an empty one for an open turn).
        """
        if self.sep_style == SeparatorStyle.TWO:
            return self._render_two()
        if self.sep_style == SeparatorStyle.PLAIN:
            return self._render_plain()
        raise ValueError(f"Unsupported separator style: {self.sep_style}")

    def _image_first_messages(self) -> list[list[str | None]]:
        """Messages with the first turn's ``<image>`` moved to its front (a copy; self is unchanged)."""
        messages = [list(m) for m in self.messages]
        if messages and messages[0][1] and DEFAULT_IMAGE_TOKEN in messages[0][1]:
            text = messages[0][1].replace(DEFAULT_IMAGE_TOKEN, "").strip()
            messages[0][1] = f"{DEFAULT_IMAGE_TOKEN}\n{text}"
        return messages

    def _render_two(self) -> tuple[str, list[tuple[int, int]]]:
        if self.sep2 is None:
            raise ValueError("SeparatorStyle.TWO needs sep2 (the end-of-answer separator)")
        seps = (self.sep, self.sep2)
        prompt, spans = self.system + self.sep, []
        for i, (role, text) in enumerate(self._image_first_messages()):
            prompt += f"{role}:"
            begin = len(prompt)
            if text is not None:
                prompt += f" {text}{seps[i % 2]}"
            spans.append((begin, len(prompt)))
        return prompt, spans

    def _render_plain(self) -> tuple[str, list[tuple[int, int]]]:
        prompt, spans = "", []
        for i, (_, text) in enumerate(self.messages):
            begin = len(prompt)
            if i == 0 and text and DEFAULT_IMAGE_TOKEN in text:
                prompt += DEFAULT_IMAGE_TOKEN
            elif text is not None:
                prompt += text + self.sep
            spans.append((begin, len(prompt)))
        return prompt, spans


conv_vicuna_v1 = Conversation(
    system="A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    roles=("USER", "ASSISTANT"),
    messages=[],
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
    version="v1",
)

conv_llava_v1 = Conversation(
    system="A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    roles=("USER", "ASSISTANT"),
    messages=[],
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
    version="v1",
)

conv_llava_plain = Conversation(
    system="",
    roles=("", ""),
    messages=[],
    sep_style=SeparatorStyle.PLAIN,
    sep="\n",
    version="plain",
)

default_conversation = conv_vicuna_v1

conv_templates: dict[str, Conversation] = {
    "v1": conv_vicuna_v1,
    "vicuna_v1": conv_vicuna_v1,
    "llava_v1": conv_llava_v1,
    "plain": conv_llava_plain,
}


def get_conv_template(name: str) -> Conversation:
    """Return a fresh copy of the template called ``name`` (a key of ``conv_templates``)."""
    if name not in conv_templates:
        raise ValueError(f"Unknown conversation template {name!r}; valid names: {sorted(conv_templates)}")
    return conv_templates[name].copy()


def conv_mode_for_model(model_name: str) -> str:
    """Pick the conversation template for a model name, as upstream's CLI does for LLaVA-1.5.

    Upstream chooses ``llava_v1`` when the lower-cased name contains "v1" (e.g. ``llava-v1.5-7b``). Its
    other branches (``llava_llama_2``, ``mistral_instruct``, ``chatml_direct``, ``mpt``, ``llava_v0``)
    select templates this project does not ship, so every other name falls back to ``vicuna_v1`` -- the
    template LLaVA-1.5 was trained with and the one all eval scripts pass explicitly.
    """
    return "llava_v1" if "v1" in model_name.lower() else "vicuna_v1"
