"""Conversation templates render upstream LLaVA's exact prompt strings."""

from __future__ import annotations

import pytest

from llava.conversation import (
    SeparatorStyle,
    conv_mode_for_model,
    conv_templates,
    default_conversation,
    get_conv_template,
)

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAVA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)


def test_vicuna_v1_generation_prompt_one_turn():
    conv = get_conv_template("vicuna_v1")
    conv.append_message(conv.roles[0], "<image>\nWhat is this?")
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
        "helpful, detailed, and polite answers to the user's questions. USER: <image>\nWhat is this? "
        "ASSISTANT:"
    )


def test_vicuna_v1_two_turns_with_answers():
    conv = get_conv_template("vicuna_v1")
    for role, text in [("USER", "Q1"), ("ASSISTANT", "A1"), ("USER", "Q2"), ("ASSISTANT", "A2")]:
        conv.append_message(role, text)
    assert conv.get_prompt() == f"{VICUNA_SYSTEM} USER: Q1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>"


def test_second_turn_generation_prompt_has_no_trailing_space():
    conv = get_conv_template("v1")
    for role, text in [("USER", "Q1"), ("ASSISTANT", "A1"), ("USER", "Q2"), ("ASSISTANT", None)]:
        conv.append_message(role, text)
    assert conv.get_prompt() == f"{VICUNA_SYSTEM} USER: Q1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:"


def test_llava_v1_system_text_and_separators():
    conv = get_conv_template("llava_v1")
    assert conv.system == LLAVA_SYSTEM
    assert (conv.sep_style, conv.sep, conv.sep2) == (SeparatorStyle.TWO, " ", "</s>")
    conv.append_message("USER", "Hi")
    conv.append_message("ASSISTANT", None)
    assert conv.get_prompt() == f"{LLAVA_SYSTEM} USER: Hi ASSISTANT:"


def test_template_names_and_alias():
    assert {"v1", "vicuna_v1", "llava_v1", "plain"} <= set(conv_templates)
    assert conv_templates["v1"] is conv_templates["vicuna_v1"]
    assert default_conversation is conv_templates["vicuna_v1"]
    assert conv_templates["vicuna_v1"].system == VICUNA_SYSTEM
    assert conv_templates["vicuna_v1"].roles == ("USER", "ASSISTANT")


def test_image_token_moved_to_front_of_first_turn():
    conv = get_conv_template("vicuna_v1")
    conv.append_message("USER", "  What is in <image> this picture?<image>  ")
    conv.append_message("ASSISTANT", None)
    assert conv.get_prompt() == f"{VICUNA_SYSTEM} USER: <image>\nWhat is in  this picture? ASSISTANT:"
    # The stored message itself is left as given.
    assert conv.messages[0][1] == "  What is in <image> this picture?<image>  "


def test_text_only_turn_is_not_changed():
    conv = get_conv_template("vicuna_v1")
    conv.append_message("USER", "  spaced  ")
    conv.append_message("ASSISTANT", None)
    assert conv.get_prompt() == f"{VICUNA_SYSTEM} USER:   spaced   ASSISTANT:"


def test_plain_renders_image_then_caption_and_newline():
    conv = get_conv_template("plain")
    assert (conv.system, conv.sep_style, conv.sep) == ("", SeparatorStyle.PLAIN, "\n")
    conv.append_message(conv.roles[0], "<image>\nignored question text")
    conv.append_message(conv.roles[1], "A cat on a mat.")
    assert conv.get_prompt() == "<image>A cat on a mat.\n"


def test_plain_text_turns_each_end_with_sep():
    conv = get_conv_template("plain")
    conv.append_message("", "first")
    conv.append_message("", "second")
    conv.append_message("", None)
    assert conv.get_prompt() == "first\nsecond\n"


def test_copy_is_independent_of_template():
    conv = get_conv_template("vicuna_v1")
    conv.append_message("USER", "Q")
    assert conv_templates["vicuna_v1"].messages == []
    clone = conv.copy()
    clone.append_message("ASSISTANT", "A")
    assert conv.messages == [["USER", "Q"]]
    assert clone.messages == [["USER", "Q"], ["ASSISTANT", "A"]]


def test_unknown_role_and_template_raise():
    conv = get_conv_template("vicuna_v1")
    with pytest.raises(ValueError, match="roles"):
        conv.append_message("human", "Q")
    with pytest.raises(ValueError, match="vicuna_v1"):
        get_conv_template("llama_2")


@pytest.mark.parametrize(
    ("model_name", "expected"),
    [
        ("llava-v1.5-7b", "llava_v1"),
        ("LLaVA-V1.5-13B-lora", "llava_v1"),
        ("llava-prumerge_checkpoint-500", "vicuna_v1"),
        ("vicuna-7b", "vicuna_v1"),
    ],
)
def test_conv_mode_for_model(model_name: str, expected: str):
    assert conv_mode_for_model(model_name) == expected


def test_render_gives_each_message_its_span():
    conv = get_conv_template("vicuna_v1")
    for role, text in [("USER", "<image>\nQ1"), ("ASSISTANT", "A1"), ("USER", "Q2"), ("ASSISTANT", None)]:
        conv.append_message(role, text)
    prompt, spans = conv.render()
    assert prompt == conv.get_prompt()
    assert [prompt[a:b] for a, b in spans] == [" <image>\nQ1 ", " A1</s>", " Q2 ", ""]
    assert spans[-1] == (len(prompt), len(prompt))  # the open turn ends the prompt


def test_an_empty_message_is_a_closed_turn_and_none_an_open_one():
    conv = get_conv_template("vicuna_v1")
    conv.append_message("USER", "Q")
    conv.append_message("ASSISTANT", "")
    conv.append_message("USER", "Q2")
    conv.append_message("ASSISTANT", None)
    assert conv.get_prompt() == f"{VICUNA_SYSTEM} USER: Q ASSISTANT: </s>USER: Q2 ASSISTANT:"


def test_plain_spans_are_the_image_and_the_caption():
    conv = get_conv_template("plain")
    conv.append_message("", "<image>\nignored")
    conv.append_message("", "A cat.")
    prompt, spans = conv.render()
    assert [prompt[a:b] for a, b in spans] == ["<image>", "A cat.\n"]
