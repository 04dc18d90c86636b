"""Training data: label spans, templates, text-only samples, the collator and bad-data handling."""

import json

import pytest
from PIL import Image

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import get_conv_template
from llava.mm_utils import load_image_processor, tokenizer_image_token
from llava.prompting import prompt_ids
from llava.train.data import BadSampleError, DataCollatorForSupervisedDataset, LazySupervisedDataset, render

MULTI_TURN = {
    "id": "multi",
    "image": "a.png",
    "conversations": [
        {"from": "human", "value": "What is the colour of the ball?\n<image>"},
        {"from": "gpt", "value": "The ball is red."},
        {"from": "human", "value": "How many cups are there?"},
        {"from": "gpt", "value": "There are 3 cups, next to a cat."},
        {"from": "human", "value": "Is it a photo?"},
        {"from": "gpt", "value": "Yes"},
    ],
}
TEXT_ONLY = {
    "id": "text",
    "conversations": [
        {"from": "human", "value": "Say hello twice."},
        {"from": "gpt", "value": "Hello hello!"},
        {"from": "human", "value": "And once?"},
        {"from": "gpt", "value": "Hello."},
    ],
}
CAPTION = {
    "id": "cap",
    "image": "a.png",
    "conversations": [
        {"from": "human", "value": "Render a short caption.\n<image>"},
        {"from": "gpt", "value": "a red ball on grass"},
    ],
}


@pytest.fixture
def data_dir(tmp_path):
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "a.png")
    return tmp_path


def dataset(data_dir, tokenizer_dir, records, version="v1", **kwargs):
    from transformers import AutoTokenizer

    path = data_dir / "data.json"
    path.write_text(json.dumps(records))
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return LazySupervisedDataset(
        str(path), tokenizer, _processor(data_dir), version, str(data_dir), "pad", **kwargs
    ), tokenizer


def _processor(folder):
    from llava.tiny import save_image_processor

    save_image_processor(folder / "processor")
    return load_image_processor(str(folder / "processor"))


def labelled_runs(item, tokenizer) -> list[str]:
    labels = item["labels"].tolist()
    runs, current = [], []
    for token in labels + [IGNORE_INDEX]:
        if token == IGNORE_INDEX:
            if current:
                runs.append(tokenizer.decode(current).strip())
            current = []
        else:
            current.append(token)
    return runs


def test_vicuna_labels_are_exactly_the_answers(data_dir, tiny_tokenizer_dir):
    ds, tok = dataset(data_dir, tiny_tokenizer_dir, [MULTI_TURN, TEXT_ONLY])
    item = ds[0]
    assert labelled_runs(item, tok) == [
        "The ball is red.</s>",
        "There are 3 cups, next to a cat.</s>",
        "Yes</s>",
    ]
    assert (item["input_ids"] == IMAGE_TOKEN_INDEX).sum() == 1 and item["image"].shape == (3, 336, 336)
    # The ids are those of the same conversation tokenised for inference (image moved to the front).
    text, _ = render(MULTI_TURN["conversations"], get_conv_template("v1"))
    assert text.startswith(
        get_conv_template("v1").system + " USER: <image>\nWhat is the colour of the ball? ASSISTANT: The ball"
    )
    assert item["input_ids"].tolist() == tokenizer_image_token(text, tok)
    first = prompt_ids(tok, "What is the colour of the ball?\n<image>", "v1").tolist()  # the runner's prompt
    assert item["input_ids"].tolist()[: len(first)] == first
    text_only = ds[1]
    assert labelled_runs(text_only, tok) == ["Hello hello!</s>", "Hello.</s>"]
    assert "image" not in text_only and not (text_only["input_ids"] == IMAGE_TOKEN_INDEX).any()


def test_plain_labels_are_the_caption_and_newline(data_dir, tiny_tokenizer_dir):
    ds, tok = dataset(data_dir, tiny_tokenizer_dir, [CAPTION], version="plain")
    item = ds[0]
    ids = item["input_ids"].tolist()
    assert ids[:2] == [tok.bos_token_id, IMAGE_TOKEN_INDEX]  # the human text is dropped
    assert item["labels"][:2].tolist() == [IGNORE_INDEX, IGNORE_INDEX]
    assert tok.decode(item["labels"][2:].tolist()) == "a red ball on grass\n"
    assert item["labels"][2:].tolist() == ids[2:]


def test_collator_pads_and_stacks_images_in_order(data_dir, tiny_tokenizer_dir):
    ds, _ = dataset(data_dir, tiny_tokenizer_dir, [TEXT_ONLY, MULTI_TURN, CAPTION])
    batch = DataCollatorForSupervisedDataset(pad_token_id=0)([ds[0], ds[1], ds[2]])
    lengths = [len(ds[i]["input_ids"]) for i in range(3)]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["images"].shape == (2, 3, 336, 336)  # two image samples, the text-only one has none
    assert (batch["input_ids"] == IMAGE_TOKEN_INDEX).sum() == 2
    assert batch["labels"][0, lengths[0] :].eq(IGNORE_INDEX).all()
    assert ds.modality_lengths[0] < 0 < ds.modality_lengths[1]


BAD = [
    ({"id": "nogpt", "conversations": [{"from": "human", "value": "hi"}]}, "no 'gpt' turn"),
    (
        {
            "id": "noimg",
            "conversations": [{"from": "human", "value": "<image>\nhi"}, {"from": "gpt", "value": "x"}],
        },
        "names no image file",
    ),
    (
        {
            "id": "missing",
            "image": "nope.png",
            "conversations": [{"from": "human", "value": "<image>\nhi"}, {"from": "gpt", "value": "x"}],
        },
        "nope.png is missing",
    ),
    (
        {
            "id": "notoken",
            "image": "a.png",
            "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}],
        },
        "no turn holds <image>",
    ),
    (
        {
            "id": "later",
            "image": "a.png",
            "conversations": [
                {"from": "human", "value": "<image>\nhi"},
                {"from": "gpt", "value": "x"},
                {"from": "human", "value": "and <image>?"},
                {"from": "gpt", "value": "y"},
            ],
        },
        "<image> appears in human turn 2",
    ),
    (
        {
            "id": "answer",
            "image": "a.png",
            "conversations": [
                {"from": "human", "value": "<image>\nhi"},
                {"from": "gpt", "value": "see <image>"},
            ],
        },
        "<image> appears in an answer",
    ),
    (
        {
            "id": "twice",
            "image": "a.png",
            "conversations": [
                {"from": "human", "value": "<image>\n<image>\nhi"},
                {"from": "gpt", "value": "x"},
            ],
        },
        r"\(2x\)",
    ),
    (
        {
            "id": "number",
            "image": 5,
            "conversations": [{"from": "human", "value": "<image>\nhi"}, {"from": "gpt", "value": "x"}],
        },
        "'image' must be a file name",
    ),
    (
        {
            "id": "roles",
            "conversations": [
                {"from": "human", "value": "hi"},
                {"from": "human", "value": "again"},
                {"from": "gpt", "value": "x"},
            ],
        },
        "turn 1 is from 'human'; roles must alternate",
    ),
    (
        {"id": "role", "conversations": [{"from": "user", "value": "hi"}, {"from": "gpt", "value": "x"}]},
        "turn 0 is not a",
    ),
]


@pytest.mark.parametrize(("record", "message"), BAD, ids=[r["id"] for r, _ in BAD])
def test_bad_samples_stop_with_the_sample_named(data_dir, tiny_tokenizer_dir, record, message):
    with pytest.raises(
        BadSampleError, match=rf"data.json sample 2 \(id {record['id']}\).*{message}.*--skip_bad_samples"
    ):
        dataset(data_dir, tiny_tokenizer_dir, [TEXT_ONLY, record])
    ds, _ = dataset(data_dir, tiny_tokenizer_dir, [TEXT_ONLY, record, MULTI_TURN], skip_bad=True)
    assert len(ds) == 2 and ds.skipped == 1


def test_malformed_jsonl_line_and_corrupt_image(data_dir, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    path = data_dir / "data.jsonl"
    path.write_text(json.dumps(TEXT_ONLY) + "\n{not json\n" + json.dumps(MULTI_TURN) + "\n")
    with pytest.raises(BadSampleError, match=r"data.jsonl line 2: not valid JSON"):
        LazySupervisedDataset(str(path), tok, _processor(data_dir), "v1", str(data_dir))
    ds = LazySupervisedDataset(str(path), tok, _processor(data_dir), "v1", str(data_dir), skip_bad=True)
    assert len(ds) == 2 and ds.skipped == 1

    clean = data_dir / "clean.jsonl"
    clean.write_text(json.dumps(TEXT_ONLY) + "\n" + json.dumps(MULTI_TURN) + "\n")
    strict = LazySupervisedDataset(str(clean), tok, _processor(data_dir), "v1", str(data_dir))
    (data_dir / "a.png").write_bytes(b"not a png")
    with pytest.raises(BadSampleError, match=r"clean.jsonl line 2 \(id multi\).*a.png"):
        strict[1]
    assert "image" not in ds[1]  # skipped: replaced by the next usable sample (the text-only one)
    assert ds.corrupt_images.value == 1


def test_file_encodings_are_accepted_or_named(data_dir, tiny_tokenizer_dir):
    """A UTF-8 byte-order mark is accepted; Latin-1 and UTF-16 files are errors naming the file and line."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    records = [
        TEXT_ONLY,
        {**CAPTION, "conversations": [CAPTION["conversations"][0], {"from": "gpt", "value": "un café"}]},
    ]
    text = json.dumps(records, ensure_ascii=False, indent=1)

    def build(name, **kwargs):
        return LazySupervisedDataset(
            str(data_dir / name), tok, _processor(data_dir), "v1", str(data_dir), **kwargs
        )

    (data_dir / "bom.json").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert len(build("bom.json")) == 2
    (data_dir / "latin1.json").write_bytes(text.encode("latin-1"))
    line = text[: text.index("café")].count("\n") + 1
    with pytest.raises(BadSampleError, match=rf"latin1.json line {line}: not UTF-8 \(byte 0xe9\)"):
        build("latin1.json")
    (data_dir / "utf16.json").write_bytes(text.encode("utf-16"))
    with pytest.raises(BadSampleError, match="utf16.json is UTF-16/32 encoded"):
        build("utf16.json")
    lines = [
        json.dumps(r, ensure_ascii=False).encode(enc)
        for r, enc in zip(records + [MULTI_TURN], ["utf-8", "latin-1", "utf-8"])
    ]
    (data_dir / "mixed.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")
    with pytest.raises(BadSampleError, match=r"mixed.jsonl line 2: not UTF-8.*--skip_bad_samples"):
        build("mixed.jsonl")
    skipping = build("mixed.jsonl", skip_bad=True)
    assert len(skipping) == 2 and skipping.skipped == 1


def test_the_image_check_can_be_skipped_and_a_missing_file_is_named_when_drawn(
    data_dir, tiny_tokenizer_dir, monkeypatch
):
    from pathlib import Path

    missing = {**MULTI_TURN, "id": "gone", "image": "gone.png"}
    with pytest.raises(BadSampleError, match=r"\(id gone\).*gone.png is missing"):
        dataset(data_dir, tiny_tokenizer_dir, [TEXT_ONLY, missing])
    looked = []
    real_is_file = Path.is_file
    monkeypatch.setattr(Path, "is_file", lambda self: looked.append(self.name) or real_is_file(self))
    ds, _ = dataset(data_dir, tiny_tokenizer_dir, [TEXT_ONLY, missing], check_images=False)
    assert "gone.png" not in looked and len(ds) == 2  # --skip_image_check: no file is looked at up front
    with pytest.raises(BadSampleError, match=r"\(id gone\).*gone.png"):
        ds[1]
    skipping, _ = dataset(
        data_dir, tiny_tokenizer_dir, [TEXT_ONLY, missing], check_images=False, skip_bad=True
    )
    assert "image" not in skipping[1] and skipping.corrupt_images.value == 1


def test_the_collator_keeps_each_items_own_ids_and_labels(data_dir, tiny_tokenizer_dir):
    """Row by row, the collated ids and labels are the item's, then padding (pad id, IGNORE_INDEX)."""
    ds, _ = dataset(data_dir, tiny_tokenizer_dir, [TEXT_ONLY, MULTI_TURN, CAPTION])
    items = [ds[0], ds[1], ds[2]]
    batch = DataCollatorForSupervisedDataset(pad_token_id=0)(items)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        assert batch["input_ids"][row, :n].tolist() == item["input_ids"].tolist()
        assert batch["labels"][row, :n].tolist() == item["labels"].tolist()
        assert batch["labels"][row, n:].eq(IGNORE_INDEX).all() and batch["input_ids"][row, n:].eq(0).all()
        assert item["labels"].eq(IGNORE_INDEX).sum() > 0  # the prompt is not trained on
