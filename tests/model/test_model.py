"""LlavaLlamaForCausalLM: splicing, parity with transformers' LLaVA, batching, and the tower's layers."""

import contextlib

import pytest
import torch
from safetensors import safe_open
from tests_support import pad_left, prompt_ids

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.model.convert_llava_hf import to_hf
from llava.model.llava_arch import splice_visual_tokens


@contextlib.contextmanager
def reduction(model, value):
    previous = model.config.mm_token_reduction
    model.set_token_reduction(value)
    try:
        yield
    finally:
        model.set_token_reduction(previous)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 336, 336, generator=torch.Generator().manual_seed(seed))


def pad(seqs: list[torch.Tensor], side: str, value: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    if side == "left":
        return pad_left(seqs, value)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), value, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = s, 1
    return ids, mask


# ---------------------------------------------------------------------------------------------
# The splice, on toy embeddings whose values reveal where each token went
# ---------------------------------------------------------------------------------------------


def toy_embed(ids: torch.Tensor) -> torch.Tensor:
    return ids.float()[..., None].expand(*ids.shape, 2).clone()  # token id -> [id, id]


def toy_images(lengths: list[int], width: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.zeros(len(lengths), width, 2)
    for i, n in enumerate(lengths):
        tokens[i, :n] = -(100 * (i + 1) + torch.arange(n, dtype=torch.float))[:, None]  # -101, -102, ...
    return tokens, torch.tensor(lengths)


def test_splice_right_and_left_padding_labels_and_positions():
    ids, mask = pad(
        [torch.tensor([1, 5, IMAGE_TOKEN_INDEX, 6]), torch.tensor([1, IMAGE_TOKEN_INDEX, 7])], "right"
    )
    labels = ids.masked_fill(ids == IMAGE_TOKEN_INDEX, IGNORE_INDEX).masked_fill(mask == 0, IGNORE_INDEX)
    tokens, lengths = toy_images([3, 1])
    out = splice_visual_tokens(ids, mask, labels, tokens, lengths, toy_embed, padding_side="right")
    assert out.inputs_embeds[..., 0].tolist() == [[1, 5, -100, -101, -102, 6], [1, -200, 7, 0, 0, 0]]
    assert out.attention_mask.tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]]
    assert out.position_ids.tolist() == [[0, 1, 2, 3, 4, 5], [0, 1, 2, 0, 0, 0]]
    assert out.labels.tolist() == [[1, 5, -100, -100, -100, 6], [1, -100, 7, -100, -100, -100]]
    assert out.num_visual_tokens.tolist() == [3, 1]

    left = splice_visual_tokens(ids, mask, None, tokens, lengths, toy_embed, padding_side="left")
    assert left.inputs_embeds[1, :, 0].tolist() == [0, 0, 0, 1, -200, 7]
    assert left.attention_mask[1].tolist() == [0, 0, 0, 1, 1, 1]
    assert left.position_ids[1].tolist() == [0, 0, 0, 0, 1, 2]


def test_splice_truncates_and_reports_it():
    ids = torch.tensor([[1, IMAGE_TOKEN_INDEX, 6, 7]])
    tokens, lengths = toy_images([4])
    out = splice_visual_tokens(ids, None, ids.clone(), tokens, lengths, toy_embed, max_length=5)
    assert out.inputs_embeds[0, :, 0].tolist() == [1, -100, -101, -102, -103]
    assert out.truncated.tolist() == [True]
    assert out.labels[0].tolist() == [1] + [IGNORE_INDEX] * 4


def test_splice_several_images_text_only_and_zero_length():
    ids, mask = pad(
        [
            torch.tensor([1, IMAGE_TOKEN_INDEX, 5, IMAGE_TOKEN_INDEX]),
            torch.tensor([1, 8]),
            torch.tensor([1, IMAGE_TOKEN_INDEX]),
        ],
        "right",
    )
    tokens, lengths = toy_images([2, 1, 0])
    out = splice_visual_tokens(ids, mask, None, tokens, lengths, toy_embed)
    assert out.inputs_embeds[..., 0].tolist() == [[1, -100, -101, 5, -200], [1, 8, 0, 0, 0], [1, 0, 0, 0, 0]]
    assert out.attention_mask.sum(1).tolist() == [5, 2, 1]


def test_splice_counts_must_match():
    ids = torch.tensor([[1, IMAGE_TOKEN_INDEX, 5]])
    tokens, lengths = toy_images([2, 2])
    with pytest.raises(ValueError, match="1 <image> placeholder.*2 image"):
        splice_visual_tokens(ids, None, None, tokens, lengths, toy_embed)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


def test_none_matches_transformers_llava(tiny_llava):
    tokenizer, model = tiny_llava
    ids = prompt_ids(tokenizer, "What is in the image?")[None]
    pixels = images(1)
    ours = model(input_ids=ids, images=pixels).logits
    hf_model, hf_tokenizer = to_hf(model, tokenizer)
    at = int((ids[0] == IMAGE_TOKEN_INDEX).nonzero())
    n = model.get_vision_tower().num_patches
    expanded = torch.cat([ids[0, :at], torch.full((n,), hf_model.config.image_token_index), ids[0, at + 1 :]])
    theirs = hf_model(input_ids=expanded[None], pixel_values=pixels).logits
    assert ours.shape[1] == theirs.shape[1] == ids.shape[1] - 1 + n
    torch.testing.assert_close(ours, theirs[..., : ours.shape[-1]], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["none", "prumerge", "prumerge_plus"])
def test_batched_forward_equals_single_samples(tiny_llava, method):
    tokenizer, model = tiny_llava
    seqs = [prompt_ids(tokenizer, q) for q in ["What is this?", "Describe it in detail.", "Is there a cat?"]]
    pixels = images(3, seed=1)
    with reduction(model, method), torch.no_grad():
        ids, mask = pad(seqs, "right")
        batched = model(input_ids=ids, attention_mask=mask, images=pixels)
        counts = model.get_vision_tower()(pixels).lengths
        for i, seq in enumerate(seqs):
            single = model(input_ids=seq[None], images=pixels[i : i + 1]).logits[0]
            torch.testing.assert_close(batched.logits[i, : len(single)], single, rtol=1e-4, atol=1e-4)
            assert len(single) == len(seq) - 1 + int(counts[i])
    if method != "none":
        assert int(counts.max()) < model.get_vision_tower().num_patches


def test_batched_greedy_generate_equals_single(tiny_llava):
    tokenizer, model = tiny_llava
    seqs = [
        prompt_ids(tokenizer, q) for q in ["What is this?", "Describe the image in detail please.", "A B C D"]
    ]
    pixels = images(3, seed=2)
    with reduction(model, "prumerge_plus"):
        ids, mask = pad(seqs, "right")  # the model re-pads on the left itself
        batched = model.generate(ids, attention_mask=mask, images=pixels, max_new_tokens=6, do_sample=False)
        for i, seq in enumerate(seqs):
            single = model.generate(seq[None], images=pixels[i : i + 1], max_new_tokens=6, do_sample=False)
            assert batched[i, : single.shape[1]].tolist() == single[0].tolist()


def test_generate_runs_the_lm_head_on_the_last_prompt_position_only(tiny_llava):
    """Prefill inside ``generate`` asks for one position of logits, not one per prompt token."""
    tokenizer, model = tiny_llava
    widths = []
    hook = model.lm_head.register_forward_hook(lambda _m, args, _o: widths.append(args[0].shape[1]))
    try:
        seq = prompt_ids(tokenizer, "What is this?")
        model.generate(seq[None], images=images(1, seed=3), max_new_tokens=3, do_sample=False)
    finally:
        hook.remove()
    assert widths == [1, 1, 1]  # prefill and two decoding steps
    with torch.no_grad():
        full = model(input_ids=seq[None], images=images(1, seed=3))
        last = model(input_ids=seq[None], images=images(1, seed=3), logits_to_keep=1)
    assert last.logits.shape[1] == 1 and full.logits.shape[1] > 1
    torch.testing.assert_close(last.logits[:, -1], full.logits[:, -1])


def test_text_only_samples_go_through_unchanged(tiny_llava):
    tokenizer, model = tiny_llava
    text = prompt_ids(tokenizer, "What is this?", image=False)[None]
    with torch.no_grad():
        plain = model(input_ids=text).logits
        spliced = model(input_ids=text, images=images(0)).logits
    torch.testing.assert_close(plain, spliced)


def test_reduction_reaches_the_language_model(tiny_llava):
    tokenizer, model = tiny_llava
    ids = prompt_ids(tokenizer, "What is this?")
    with reduction(model, {"method": "prumerge", "budget": 10}), torch.no_grad():
        spliced = model.prepare_multimodal_inputs(ids[None], None, images(1))
    assert spliced.num_visual_tokens.tolist() == [10]
    assert spliced.inputs_embeds.shape[1] == len(ids) - 1 + 10
    assert model.config.mm_token_reduction["method"] == "none"  # restored by the context manager


class LayerCalls:
    def __init__(self, tower):
        self.names = []
        last = tower.vision_tower.encoder.layers[-1]
        watched = {
            "layer": last,
            "layer_norm1": last.layer_norm1,
            "q_proj": last.self_attn.q_proj,
            "k_proj": last.self_attn.k_proj,
            "v_proj": last.self_attn.v_proj,
            "mlp": last.mlp,
            "second_to_last": tower.vision_tower.encoder.layers[-2],
        }
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in watched.items()]

    def _hook(self, name):
        return lambda *_: self.names.append(name)

    def close(self):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize(
    ("method", "expected"),
    [("none", {"second_to_last"}), ("prumerge", {"second_to_last", "layer_norm1", "q_proj", "k_proj"})],
)
def test_tower_runs_only_what_the_reducer_needs(tiny_llava, method, expected):
    _, model = tiny_llava
    with reduction(model, method):
        calls = LayerCalls(model.get_vision_tower())
        try:
            model.get_vision_tower()(images(1))
        finally:
            calls.close()
    assert set(calls.names) == expected


def test_saved_checkpoint_has_no_tower_weights_and_records_reduction(tiny_llava_dir):
    import json

    with safe_open(str(tiny_llava_dir / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("model.mm_projector.0.") for k in keys)
    assert any(k.startswith("model.layers.0.") for k in keys)
    assert not any("vision_tower" in k for k in keys)
    config = json.loads((tiny_llava_dir / "config.json").read_text())
    assert config["model_type"] == "llava_llama"
    assert config["mm_token_reduction"]["method"] == "none"
    assert config["mm_vision_tower"] == "vision_tower"
    assert config["mm_projector_type"] == "mlp2x_gelu" and config["mm_vision_select_layer"] == -2


def test_text_only_generate_returns_only_new_tokens(tiny_llava):
    from transformers import GenerationMixin

    tokenizer, model = tiny_llava
    text = prompt_ids(tokenizer, "What is this?", image=False)[None]
    ours = model.generate(text, max_new_tokens=5, do_sample=False, eos_token_id=None)
    plain = GenerationMixin.generate(model, text, max_new_tokens=5, do_sample=False, eos_token_id=None)
    assert ours.shape == (1, 5)
    assert ours[0].tolist() == plain[0, text.shape[1] :].tolist()
