"""Video-LLaVA: the LanguageBind video tower, per-frame reduction, the splice, generation, HF parity, loaders."""

import json

import pytest
import torch
from tests_support import pad_left
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, VideoLlavaForConditionalGeneration
from transformers import VideoLlavaConfig as HFVideoLlavaConfig

from llava.constants import IMAGE_TOKEN_INDEX
from llava.mm_utils import tokenizer_image_token
from llava.model.language_model.llava_video import concat_frames
from llava.model.multimodal_encoder.languagebind_video import (
    LanguageBindVideoConfig,
    LanguageBindVideoEncoder,
    VideoTower,
    load_video_tower_config,
    resolve_video_reduction,
    to_frames_first,
)
from llava.model.token_reduction import ReducerInputs, ReductionConfig, class_attention, outlier_count, reduce
from llava.model.video_loader import load_video_llava
from llava.prompting import video_prompt, video_prompt_ids
from llava.tiny import build_tiny_video_llava, save_tiny_languagebind

T = 8  # frames
N = 16  # patches per frame (56 px, patch 14)


def videos(n: int, seed: int = 0) -> torch.Tensor:
    """``[V, 3, T, 56, 56]``, the layout of ``languagebind_video_transform``."""
    return torch.randn(n, 3, T, 56, 56, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tower_dir(tmp_path_factory):
    return save_tiny_languagebind(tmp_path_factory.mktemp("languagebind"))


@pytest.fixture(scope="module")
def video_llava_dir(tmp_path_factory, tower_dir, tiny_tokenizer_dir):
    out = tmp_path_factory.mktemp("video_llava")
    build_tiny_video_llava(out, tower_dir=tower_dir, tokenizer_dir=tiny_tokenizer_dir)
    return out


@pytest.fixture(scope="module")
def video_llava(video_llava_dir):
    tokenizer, model, _, _ = load_video_llava(str(video_llava_dir), device="cpu")
    return tokenizer, model


def tower(tower_dir, impl="languagebind", reduction=None, **options) -> VideoTower:
    config = load_video_tower_config(tower_dir)
    video = VideoTower(str(tower_dir), impl=impl)
    video.load_model()
    video.set_reduction(resolve_video_reduction(reduction, video.num_patches, config.num_frames, **options))
    return video


# ---------------------------------------------------------------------------------------------
# The tower
# ---------------------------------------------------------------------------------------------


def test_encoder_without_temporal_attention_is_clip_per_frame():
    config = LanguageBindVideoConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=56,
        patch_size=14,
        hidden_act="gelu",
        add_time_attn=False,
    )
    torch.manual_seed(0)
    ours = LanguageBindVideoEncoder(config)
    clip_fields = {k: v for k, v in config.to_dict().items() if k in CLIPVisionConfig().to_dict()}
    clip = CLIPVisionModel(CLIPVisionConfig(**{**clip_fields, "model_type": "clip_vision_model"}))
    clip.load_state_dict(ours.state_dict(), strict=True)
    frames = torch.randn(2 * T, 3, 56, 56)
    theirs = clip(pixel_values=frames, output_hidden_states=True).hidden_states
    for mine, reference in zip(ours(frames, T), theirs, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-5)


def test_temporal_attention_mixes_frames_and_clip_impl_does_not(tower_dir):
    pixels = videos(1)
    changed = pixels.clone()
    changed[:, :, 3] += 1.0
    with_time, without = tower(tower_dir), tower(tower_dir, impl="clip")
    on = with_time.encode_frames(to_frames_first(pixels)).view(T, N + 1, -1)
    on_changed = with_time.encode_frames(to_frames_first(changed)).view(T, N + 1, -1)
    off = without.encode_frames(to_frames_first(pixels)).view(T, N + 1, -1)
    off_changed = without.encode_frames(to_frames_first(changed)).view(T, N + 1, -1)
    others = [f for f in range(T) if f != 3]
    assert (on[others] - on_changed[others]).abs().max() > 1e-3  # other frames see frame 3
    torch.testing.assert_close(off[others], off_changed[others])  # plain CLIP: frames independent
    assert (on - off).abs().max() > 1e-3
    # the layouts: channels-then-time and frames-first give the same features
    torch.testing.assert_close(with_time(pixels.transpose(1, 2)).tokens, with_time(pixels).tokens)


def test_frames_layout_is_read_or_refused():
    assert to_frames_first(torch.zeros(2, 3, 8, 4, 4)).shape == (2, 8, 3, 4, 4)
    assert to_frames_first(torch.zeros(2, 8, 3, 4, 4)).shape == (2, 8, 3, 4, 4)
    with pytest.raises(ValueError, match="frames_first"):
        to_frames_first(torch.zeros(2, 3, 3, 4, 4))
    assert to_frames_first(torch.zeros(2, 3, 3, 4, 5), frames_first=True).shape == (2, 3, 3, 4, 5)


@pytest.mark.parametrize("impl", ["languagebind", "clip"])
def test_attention_and_keys_equal_hooks_on_a_full_forward(tower_dir, impl):
    """The authors read q/k with hooks in a full forward; ours recomputes them (temporal block included)."""
    video = tower(tower_dir, impl=impl, reduction="prumerge")
    layer = video.vision_tower.encoder.layers[video.num_layers_run]
    seen = {}
    hooks = [
        layer.self_attn.q_proj.register_forward_hook(lambda _m, _a, out: seen.setdefault("q", out)),
        layer.self_attn.k_proj.register_forward_hook(lambda _m, _a, out: seen.setdefault("k", out)),
    ]
    frames = to_frames_first(videos(2, seed=3))
    try:
        video.vision_tower(frames.flatten(0, 1), T)
    finally:
        for hook in hooks:
            hook.remove()
    expected = class_attention(seen["q"][:, 0], seen["k"], layer.self_attn.num_heads, "reference")
    attention, keys, _ = video.attention_and_keys(video.encode_frames(frames), num_frames=T)
    torch.testing.assert_close(attention, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(keys, seen["k"][:, 1:].float(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Per-frame reduction
# ---------------------------------------------------------------------------------------------

FRAME_REDUCTIONS = [
    ("prumerge", {}),
    ("prumerge", {"form": "adaptive"}),
    ("prumerge_plus", {}),
    ("prumerge_plus", {"form": "adaptive"}),
    ("aits", {"form": "adaptive"}),
    ("spatial", {}),
]


@pytest.mark.parametrize(("method", "options"), FRAME_REDUCTIONS)
def test_each_frame_is_reduced_as_one_image(tower_dir, method, options):
    reduction = {"method": "spatial", "grid": [2, 2]} if method == "spatial" else method
    video = tower(tower_dir, reduction=reduction, **options)
    pixels = videos(2, seed=5)
    out = video(pixels)
    hidden = video.encode_frames(to_frames_first(pixels))
    attention, keys, _ = video.attention_and_keys(hidden, num_frames=T)
    assert out.tokens.shape[0] == out.lengths.shape[0] == 2 * T
    for row in range(2 * T):
        alone = reduce(
            ReducerInputs(hidden[row : row + 1, 1:], attention[row : row + 1], keys[row : row + 1], (4, 4)),
            video.reduction,
        )
        length = int(alone.lengths[0])
        assert int(out.lengths[row]) == length + 1  # the frame's CLS in front
        torch.testing.assert_close(out.tokens[row, 0], hidden[row, 0])
        torch.testing.assert_close(
            out.tokens[row, 1 : 1 + length], alone.tokens[0, :length], rtol=1e-5, atol=1e-5
        )
        assert out.indices[row, : 1 + length].tolist() == [-1, *alone.indices[0, :length].tolist()]


def test_fixed_forms_keep_an_eighth_and_none_keeps_everything(tower_dir):
    pixels = videos(2, seed=6)
    assert resolve_video_reduction("prumerge", 256, 8).budget == 33  # Video-LLaVA: 32 centres + extra
    assert resolve_video_reduction("prumerge_plus", 256, 8).form == "fixed"
    assert tower(tower_dir, reduction="prumerge")(pixels).lengths.tolist() == [1 + N // 8 + 1] * 2 * T
    plus = tower(tower_dir, reduction="prumerge_plus")(pixels).lengths
    assert int(plus.max()) <= 1 + 2 * (N // 8) + 1 and int(plus.min()) >= 1 + N // 8
    none = tower(tower_dir)
    out = none(pixels)
    assert out.lengths.tolist() == [N + 1] * 2 * T
    torch.testing.assert_close(out.tokens, none.encode_frames(to_frames_first(pixels)))  # hidden_states[-2]
    no_cls = tower(tower_dir)
    no_cls.keep_cls = False
    assert no_cls(pixels).lengths.tolist() == [N] * 2 * T


def test_iqr_fence_pooled_over_a_video(tower_dir):
    pixels = videos(2, seed=7)
    video = tower(tower_dir, reduction="aits", form="adaptive", iqr_scope="video")
    assert video.reduction.iqr_group == T
    out = video(pixels)
    pooled = outlier_count(out.class_attention.reshape(2, T * N)) // T  # [V]
    assert out.lengths.tolist() == (1 + pooled).repeat_interleave(T).tolist()
    per_frame = tower(tower_dir, reduction="aits", form="adaptive")(pixels)
    assert per_frame.lengths.tolist() == (1 + outlier_count(per_frame.class_attention)).tolist()


# ---------------------------------------------------------------------------------------------
# Prompt, splice, generation
# ---------------------------------------------------------------------------------------------


def test_video_prompt_is_video_llavas(video_llava):
    question = "what is the man doing?"
    expected = (
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the human's questions. USER: "
        "<image><image><image><image><image><image><image><image>\n" + question + " ASSISTANT:"
    )
    assert video_prompt(question) == expected
    tokenizer, _ = video_llava
    ids = video_prompt_ids(tokenizer, question)
    assert int((ids == IMAGE_TOKEN_INDEX).sum()) == 8
    at = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
    assert at == list(range(at[0], at[0] + 8))  # adjacent markers leave no empty chunk between them
    assert ids.tolist() == tokenizer_image_token(expected, tokenizer)


def test_concat_frames_keeps_each_frames_count():
    tokens = torch.zeros(4, 3, 1)
    lengths = torch.tensor([1, 3, 2, 0])
    for row, n in enumerate(lengths.tolist()):
        tokens[row, :n, 0] = torch.arange(n) + 10 * (row + 1)
    out, out_lengths = concat_frames(tokens, lengths, num_frames=2)
    assert out_lengths.tolist() == [4, 2]
    assert out[..., 0].tolist() == [[10, 20, 21, 22], [30, 31, 0, 0]]


def test_splice_takes_each_frames_count_per_frame_or_per_video(video_llava):
    tokenizer, model = video_llava
    pixels = videos(2, seed=8)
    with reduction(model, "prumerge_plus", form="adaptive"):
        lengths = model.get_video_tower()(pixels).lengths
        assert len(set(lengths.tolist())) > 1  # frames differ in count
        per_frame = [video_prompt_ids(tokenizer, q) for q in ("What is this?", "Describe it in detail.")]
        per_video = [
            video_prompt_ids(tokenizer, q, num_frames=1) for q in ("What is this?", "Describe it in detail.")
        ]
        a = model.prepare_multimodal_inputs(*pad_left(per_frame), videos=pixels, padding_side="left")
        b = model.prepare_multimodal_inputs(*pad_left(per_video), videos=pixels, padding_side="left")
    assert a.num_visual_tokens.tolist() == lengths.view(2, T).sum(1).tolist()
    torch.testing.assert_close(a.inputs_embeds, b.inputs_embeds)
    assert a.attention_mask.tolist() == b.attention_mask.tolist()
    with pytest.raises(ValueError, match="do not match"):
        model.prepare_multimodal_inputs(per_frame[0][None], None, videos=pixels)


class reduction:  # noqa: N801 - a context manager used like a function
    def __init__(self, model, value, **options):
        self.model, self.value, self.options = model, value, options

    def __enter__(self):
        config = self.model.config
        self.previous = (config.mm_token_reduction, config.video_reduction_form, config.video_iqr_scope)
        self.model.set_token_reduction(self.value, **self.options)

    def __exit__(self, *exc):
        value, form, scope = self.previous
        self.model.set_token_reduction(value, form=form, iqr_scope=scope)


@pytest.mark.parametrize(("method", "form"), [("prumerge", "adaptive"), ("prumerge_plus", "fixed")])
def test_batched_greedy_generation_equals_single(video_llava, method, form):
    tokenizer, model = video_llava
    questions = ["What is this?", "Describe the image in detail please."]
    seqs = [video_prompt_ids(tokenizer, q) for q in questions]
    pixels = videos(2, seed=9)
    with reduction(model, method, form=form):
        ids, mask = pad_left(seqs)
        spliced = model.prepare_multimodal_inputs(ids, mask, videos=pixels, padding_side="left")
        batched = model.generate_spliced(spliced, max_new_tokens=4, do_sample=False)
        for i, seq in enumerate(seqs):
            single = model.generate(seq[None], videos=pixels[i : i + 1], max_new_tokens=4, do_sample=False)
            assert batched[i, : single.shape[1]].tolist() == single[0].tolist()
            alone = model.prepare_multimodal_inputs(seq[None], None, videos=pixels[i : i + 1])
            assert int(alone.num_visual_tokens[0]) == int(spliced.num_visual_tokens[i])


# ---------------------------------------------------------------------------------------------
# Parity with transformers' VideoLlavaForConditionalGeneration, and the loaders
# ---------------------------------------------------------------------------------------------


def save_hf_layout(model, tokenizer, tower_dir, out_dir):
    """Writes ``model`` (run as ``impl="clip"``) as a -hf folder; the image tower gets another tower's weights."""
    vocab = -(-(len(tokenizer) + 3) // 64) * 64
    image_id, video_id = len(tokenizer), len(tokenizer) + 1
    vision = load_video_tower_config(tower_dir).to_dict()
    vision = {k: v for k, v in vision.items() if k in CLIPVisionConfig().to_dict() and k != "model_type"}
    text = LlamaConfig(
        **{k: getattr(model.config, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers")},
        num_attention_heads=model.config.num_attention_heads,
        num_key_value_heads=model.config.num_key_value_heads,
        max_position_embeddings=model.config.max_position_embeddings,
        vocab_size=vocab,
        pad_token_id=len(tokenizer) + 2,
    )
    config = HFVideoLlavaConfig(
        vision_config=vision,
        text_config=text.to_dict(),
        image_token_index=image_id,
        video_token_index=video_id,
        image_seq_length=N,
        video_seq_length=T * (N + 1),
    )
    hf = VideoLlavaForConditionalGeneration(config)
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("model.video_tower.vision_tower."):
            state["model.video_tower." + key.removeprefix("model.video_tower.vision_tower.")] = value
        elif key.startswith("model.mm_projector."):
            layer = {"0": "linear_1", "2": "linear_2"}[key.split(".")[2]]
            state[f"model.multi_modal_projector.{layer}.{key.split('.')[-1]}"] = value
        elif key.startswith("model.") and not key.startswith("model.vision_tower."):
            state["model.language_model." + key.removeprefix("model.")] = value
        elif key == "lm_head.weight":
            state[key] = value
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        extra = torch.randn(vocab - state[key].shape[0], state[key].shape[1])
        state[key] = torch.cat([state[key], extra])
    torch.manual_seed(1)
    image_tower = {
        f"model.image_tower.{k}": v for k, v in CLIPVisionModel(hf.config.vision_config).state_dict().items()
    }
    hf.load_state_dict({**state, **image_tower}, strict=True)
    hf.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return hf.eval()


def test_clip_path_matches_transformers_video_llava_and_hf_loader(video_llava_dir, tower_dir, tmp_path):
    tokenizer, model, _, _ = load_video_llava(str(video_llava_dir), device="cpu", impl="clip")
    hf = save_hf_layout(model, tokenizer, tower_dir, tmp_path / "hf")
    tokenizer, ours, _, _ = load_video_llava(str(tmp_path / "hf"), source="hf", device="cpu")
    assert ours.config.mm_video_tower_impl == "clip" and ours.video_reduction.method == "none"
    ids = video_prompt_ids(tokenizer, "What is this?")
    pixels = videos(1, seed=10)
    logits = ours(input_ids=ids[None], videos=pixels).logits
    at = int((ids == IMAGE_TOKEN_INDEX).nonzero()[0])
    run = torch.full((T * (N + 1),), hf.config.video_token_index)
    hf_ids = torch.cat([ids[:at], run, ids[at + T :]])[None]
    theirs = hf(input_ids=hf_ids, pixel_values_videos=pixels.transpose(1, 2)).logits
    assert logits.shape == theirs.shape
    torch.testing.assert_close(logits, theirs, rtol=1e-5, atol=1e-5)
    # an image goes through the image tower, CLS dropped, as in the port
    image_ids = tokenizer_image_token(
        video_prompt("What is this?", num_frames=1), tokenizer, return_tensors="pt"
    )
    image = torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(11))
    logits = ours(input_ids=image_ids[None], images=image).logits
    at = int((image_ids == IMAGE_TOKEN_INDEX).nonzero()[0])
    hf_ids = torch.cat([image_ids[:at], torch.full((N,), hf.config.image_token_index), image_ids[at + 1 :]])[
        None
    ]
    theirs = hf(input_ids=hf_ids, pixel_values=image).logits
    torch.testing.assert_close(logits, theirs, rtol=1e-5, atol=1e-5)


def save_original_layout(model, tokenizer, out_dir):
    """Writes ``model`` as upstream's Video-LLaVA-7B folder (model_type llava, tower copies ignored)."""
    out_dir.mkdir()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("model.video_tower.")}
    state["model.video_tower.video_tower.encoder.layers.0.mlp.fc1.weight"] = torch.zeros(2, 2)  # ignored
    state["model.image_tower.image_tower.post_layernorm.weight"] = torch.zeros(2)  # ignored
    torch.save(state, out_dir / "pytorch_model.bin")
    config = model.config.to_dict()
    for field in ("mm_video_tower_impl", "video_num_frames", "video_keep_cls", "video_reduction_form"):
        config.pop(field)
    config.update(
        model_type="llava",
        mm_video_tower="LanguageBind/LanguageBind_Video_merge",
        mm_image_tower="LanguageBind/LanguageBind_Image",
        mm_token_reduction=None,
    )
    (out_dir / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(out_dir)


def test_original_layout_loads_with_the_languagebind_tower(video_llava, tower_dir, tmp_path):
    tokenizer, model = video_llava
    save_original_layout(model, tokenizer, tmp_path / "orig")
    _, loaded, _, _ = load_video_llava(
        str(tmp_path / "orig"), source="original", video_tower=str(tower_dir), device="cpu"
    )
    assert loaded.config.mm_video_tower_impl == "languagebind"
    ids = video_prompt_ids(tokenizer, "What is this?")[None]
    pixels = videos(1, seed=12)
    torch.testing.assert_close(
        loaded(input_ids=ids, videos=pixels).logits, model(input_ids=ids, videos=pixels).logits
    )
    _, reduced, _, _ = load_video_llava(
        str(tmp_path / "orig"), video_tower=str(tower_dir), device="cpu", token_reduction="prumerge"
    )
    assert reduced.video_reduction.budget == N // 8 + 1


def test_bad_layouts_are_refused(video_llava_dir, tower_dir, tmp_path):
    image_llava = tmp_path / "image_llava"
    image_llava.mkdir()
    (image_llava / "config.json").write_text(json.dumps({"model_type": "llava", "mm_vision_tower": "clip"}))
    with pytest.raises(ValueError, match="image LLaVA checkpoint"):
        load_video_llava(str(image_llava), device="cpu")
    other = tmp_path / "llava_hf"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llava", "text_config": {}}))
    with pytest.raises(ValueError, match="not VideoLlavaForConditionalGeneration"):
        load_video_llava(str(other), device="cpu")
    with pytest.raises(ValueError, match="'ours' layout, not 'hf'"):
        load_video_llava(str(video_llava_dir), source="hf", device="cpu")
    plain = save_tiny_languagebind(tmp_path / "plain_clip", add_time_attn=False)
    video = VideoTower(str(plain), tower_config=load_video_tower_config(tower_dir))
    with pytest.raises(ValueError, match="no temporal attention weights"):
        video.load_model()
    assert load_video_tower_config(plain).add_time_attn is False
    with pytest.raises(ValueError, match="was trained on 8 frames"):
        tower(tower_dir).encode_frames(torch.randn(1, 4, 3, 56, 56))
    with pytest.raises(ValueError, match="not available for videos"):
        tower(tower_dir).set_reduction(ReductionConfig("fastv", ratio=0.5))
