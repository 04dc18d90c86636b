"""Train a tiny Llama-style sentencepiece tokenizer, for tests and toy runs on CPU.

The result behaves like Vicuna's tokenizer in the ways LLaVA depends on: BPE with byte fallback, "▁"
word prefix, ``<unk>``/``<s>``/``</s>`` at ids 0/1/2, BOS added on encode, ``pad_token = unk_token``
(id 0), ``model_max_length`` 2048 and right padding.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm
from transformers import AutoTokenizer, LlamaTokenizer, PreTrainedTokenizerBase

from llava.conversation import conv_templates

# Byte fallback reserves 256 pieces and <unk>, <s>, </s> three more; BPE merges need room beyond that.
_MIN_VOCAB_SIZE = 256 + 3 + 1
# Files that, if left from an earlier run, from_pretrained would read instead of the new tokenizer.model.
_STALE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# How often the template texts are repeated so that their words win BPE merges over the caller's texts.
_TEMPLATE_REPEATS = 10


def _template_texts() -> list[str]:
    """System prompts and role names of the shipped conversation templates (``USER:``-style too)."""
    texts: list[str] = []
    for conv in conv_templates.values():
        texts.append(conv.system)
        texts.extend(f"{role}: " for role in conv.roles if role)
    return [text for text in dict.fromkeys(texts) if text]


def _train_model_proto(texts: Iterable[str], vocab_size: int) -> bytes:
    """Train a sentencepiece BPE model in memory and return its serialised ModelProto."""
    sentences = [*texts, *(_template_texts() * _TEMPLATE_REPEATS)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=False,  # a small corpus may not support vocab_size pieces: take what it gives
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        byte_fallback=True,
        character_coverage=1.0,
        add_dummy_prefix=True,
        split_digits=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        minloglevel=2,  # silence sentencepiece's training log
    )
    return model.getvalue()


def train_sentencepiece_tokenizer(
    texts: Iterable[str], out_dir: str | Path, vocab_size: int = 512
) -> PreTrainedTokenizerBase:
    """Train a Llama-style tokenizer on ``texts`` and save it to ``out_dir``.

    The system prompts and role names of the conversation templates are added to ``texts`` so that
    LLaVA prompts tokenise into few pieces. ``vocab_size`` is an upper bound: a small corpus yields
    fewer pieces. ``out_dir`` receives ``tokenizer.model`` plus the transformers files; tokenizer files
    left there by an earlier run are replaced.

    Returns:
        The tokenizer as reloaded from ``out_dir`` with ``AutoTokenizer`` (what later stages will see).
    """
    if vocab_size < _MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be at least {_MIN_VOCAB_SIZE} (byte fallback uses 259 ids)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in _STALE_FILES:
        (out_dir / name).unlink(missing_ok=True)
    (out_dir / "tokenizer.model").write_bytes(_train_model_proto(texts, vocab_size))

    # transformers 5.x converts tokenizer.model to a tokenizers-backed LlamaTokenizer here; without
    # add_bos_token=True the converted tokenizer adds no BOS. Settings passed here (not set afterwards as
    # attributes) are the ones save_pretrained writes to tokenizer_config.json.
    tokenizer = LlamaTokenizer.from_pretrained(
        out_dir, add_bos_token=True, pad_token="<unk>", model_max_length=2048, padding_side="right"
    )
    tokenizer.save_pretrained(out_dir)
    return AutoTokenizer.from_pretrained(out_dir)
