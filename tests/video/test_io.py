"""Video input: Video-LLaVA's frame indices, the decoders (a real mp4 written and read back), frame
folders, ``.npy`` arrays, every error path, and the pixel transform against independent computations."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import llava.video.io as video_io
from llava.video import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    available_decoders,
    find_video,
    languagebind_video_transform,
    load_video,
    sample_frame_indices,
    video_pixel_values,
)
from llava.video.transforms import short_side_size

VIDEO_HINT = 'install the video extra: pip install -c constraints.txt -e ".[video]"'

# 12 solid colours, pairwise at least 100 apart in some channel, so a wrong frame cannot pass for a right one.
PALETTE = [
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (0, 255, 255),
    (255, 0, 255),
    (128, 128, 128),
    (255, 255, 255),
    (0, 0, 0),
    (255, 128, 0),
    (128, 0, 255),
    (0, 128, 64),
]
# np.linspace(0, 11, 8): 0, 1.57, 3.14, 4.71, 6.29, 7.86, 9.43, 11 -> truncated.
INDICES_OF_12 = [0, 1, 3, 4, 6, 7, 9, 11]


def solid_frames(n: int, height: int = 48, width: int = 64) -> np.ndarray:
    frames = np.zeros((n, height, width, 3), dtype=np.uint8)
    for k in range(n):
        frames[k] = PALETTE[k % len(PALETTE)]
    return frames


def nearest_palette_index(frame: np.ndarray) -> int:
    colour = frame.reshape(-1, 3).mean(axis=0)
    return int(np.argmin([np.abs(colour - np.array(c)).max() for c in PALETTE]))


def write_video(path: Path, frames: np.ndarray, codec: str = "mpeg4", fps: int = 12) -> Path:
    """Encodes uint8 RGB ``frames`` with PyAV (high quality, so solid colours survive within a few levels)."""
    av = pytest.importorskip("av", reason=VIDEO_HINT)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 4_000_000
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def mp4_12(tmp_path_factory) -> Path:
    """A 12-frame mp4 (mpeg4), frame k filled with PALETTE[k]."""
    return write_video(tmp_path_factory.mktemp("video") / "colours.mp4", solid_frames(12))


def require(decoder: str) -> None:
    pytest.importorskip({"decord": "decord", "pyav": "av"}[decoder], reason=VIDEO_HINT)


# --- frame indices ---------------------------------------------------------------------------------------

# Worked by hand from linspace(0, n - 1, 8) = i * (n - 1) / 7, truncated.
INDEX_TABLE = {
    1: [0, 0, 0, 0, 0, 0, 0, 0],
    5: [0, 0, 1, 1, 2, 2, 3, 4],  # 0, .57, 1.14, 1.71, 2.29, 2.86, 3.43, 4
    8: [0, 1, 2, 3, 4, 5, 6, 7],
    9: [0, 1, 2, 3, 4, 5, 6, 8],  # 0, 1.14, 2.29, 3.43, 4.57, 5.71, 6.86, 8
    1000: [0, 142, 285, 428, 570, 713, 856, 999],  # steps of 142.71
}


@pytest.mark.parametrize("n", sorted(INDEX_TABLE))
def test_frame_indices_follow_video_llava(n):
    indices = sample_frame_indices(n)
    assert indices.tolist() == INDEX_TABLE[n]
    assert indices.tolist() == np.linspace(0, n - 1, 8, dtype=int).tolist()
    assert indices.dtype == np.int64


def test_frame_indices_other_counts():
    assert sample_frame_indices(12).tolist() == INDICES_OF_12
    assert sample_frame_indices(10, num=4).tolist() == [0, 3, 6, 9]
    assert sample_frame_indices(7, num=1).tolist() == [0]


def test_frame_indices_refuse_empty_videos_and_counts():
    with pytest.raises(ValueError, match=r"clip\.mp4 has 0 frames"):
        sample_frame_indices(0, source="videos/clip.mp4")
    with pytest.raises(ValueError, match="the video has -3 frames"):
        sample_frame_indices(-3)
    with pytest.raises(ValueError, match="num_frames must be at least 1"):
        sample_frame_indices(10, num=0)


# --- decoders on a real video ----------------------------------------------------------------------------


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_decoder_round_trip(mp4_12, decoder):
    require(decoder)
    frames = load_video(mp4_12, decoder=decoder)
    assert frames.shape == (8, 48, 64, 3) and frames.dtype == np.uint8 and frames.flags["C_CONTIGUOUS"]
    assert [nearest_palette_index(f) for f in frames] == INDICES_OF_12
    for frame, index in zip(frames, INDICES_OF_12):
        error = np.abs(frame.astype(int) - np.array(PALETTE[index])).max()
        assert error <= 12, f"frame {index}: off by {error} levels"


def test_decoders_agree_and_num_frames(mp4_12):
    require("decord")
    require("pyav")
    by_decord = load_video(mp4_12, num_frames=4, decoder="decord")
    by_pyav = load_video(mp4_12, num_frames=4, decoder="pyav")
    assert [nearest_palette_index(f) for f in by_decord] == [0, 3, 7, 11]
    assert np.abs(by_decord.astype(int) - by_pyav.astype(int)).max() <= 3


def test_auto_prefers_decord_then_pyav(mp4_12, monkeypatch):
    require("pyav")
    assert available_decoders()[-1:] == ["pyav"]
    calls = []
    monkeypatch.setattr(video_io, "_load_decord", lambda path, n: calls.append("decord") or solid_frames(n))
    monkeypatch.setattr(video_io, "available_decoders", lambda: ["decord", "pyav"])
    load_video(mp4_12, decoder="auto")
    assert calls == ["decord"]
    monkeypatch.setattr(video_io, "available_decoders", lambda: ["pyav"])
    frames = load_video(mp4_12, decoder="auto")
    assert calls == ["decord"]  # PyAV read it this time
    assert [nearest_palette_index(f) for f in frames] == INDICES_OF_12


def test_short_video_repeats_frames(tmp_path):
    require("pyav")
    path = write_video(tmp_path / "three.mp4", solid_frames(3))
    # np.linspace(0, 2, 8) -> 0, 0, 0, 0, 1, 1, 1, 2
    for decoder in available_decoders():
        frames = load_video(path, decoder=decoder)
        assert [nearest_palette_index(f) for f in frames] == [0, 0, 0, 0, 1, 1, 1, 2], decoder


# --- frame folders and .npy arrays -----------------------------------------------------------------------


def test_frame_folder_in_name_order(tmp_path):
    frames = solid_frames(12, 20, 30)
    for k, frame in enumerate(frames):  # unpadded numbers: frame_10 must come after frame_9
        Image.fromarray(frame).save(tmp_path / f"frame_{k + 1}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / "sub").mkdir()
    loaded = load_video(tmp_path)
    assert loaded.shape == (8, 20, 30, 3)
    np.testing.assert_array_equal(loaded, frames[INDICES_OF_12])
    assert video_io.frame_files(tmp_path)[9].name == "frame_10.png"
    np.testing.assert_array_equal(load_video(tmp_path, decoder="frames", num_frames=2), frames[[0, 11]])


def test_frame_folder_greyscale_becomes_rgb(tmp_path):
    for k in range(3):
        Image.fromarray(np.full((8, 8), 40 * k, dtype=np.uint8)).save(tmp_path / f"{k:03d}.jpg", quality=100)
    frames = load_video(tmp_path, num_frames=3)
    assert frames.shape == (3, 8, 8, 3)
    assert np.abs(frames.astype(int) - np.array([0, 40, 80])[:, None, None, None]).max() <= 2


def test_npy_array(tmp_path):
    frames = np.arange(12, dtype=np.uint8)[:, None, None, None] * np.ones((12, 5, 7, 3), dtype=np.uint8)
    np.save(tmp_path / "clip.npy", frames)
    loaded = load_video(tmp_path / "clip.npy")
    assert loaded[:, 0, 0, 0].tolist() == INDICES_OF_12
    assert loaded.shape == (8, 5, 7, 3) and loaded.flags["C_CONTIGUOUS"] and loaded.flags["WRITEABLE"]
    assert load_video(tmp_path / "clip.npy", num_frames=3, decoder="frames")[:, 0, 0, 0].tolist() == [
        0,
        5,
        11,
    ]


# --- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decoder", ["auto", "decord", "pyav", "frames"])
def test_missing_path(tmp_path, decoder):
    with pytest.raises(FileNotFoundError, match=r"Video not found: .*nowhere\.mp4"):
        load_video(tmp_path / "nowhere.mp4", decoder=decoder)


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage" * 500], ids=["empty", "garbage"])
def test_unreadable_video(tmp_path, decoder, content):
    require(decoder)
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"broken\.mp4 is not a readable video \(" + decoder):
        load_video(path, decoder=decoder)


def zero_frame_avi(path: Path) -> Path:
    av = pytest.importorskip("av", reason=VIDEO_HINT)
    with av.open(str(path), "w") as container:  # header with a video stream, no packets
        stream = container.add_stream("mpeg4", rate=12)
        stream.width, stream.height = 64, 48
        container.start_encoding()
    return path


def test_zero_frame_video(tmp_path):
    path = zero_frame_avi(tmp_path / "empty.avi")
    with pytest.raises(ValueError, match=r"empty\.avi has 0 frames"):
        load_video(path, decoder="pyav")
    if "decord" in available_decoders():  # decord cannot even open it
        with pytest.raises(ValueError, match=r"empty\.avi"):
            load_video(path, decoder="decord")


def test_decord_reporting_no_frames(tmp_path, monkeypatch):
    """decord's own count of 0 is refused before get_batch (a stand-in module, as real files fail earlier)."""
    fake = types.ModuleType("decord")
    fake.cpu = lambda index: ("cpu", index)

    class EmptyReader:
        def __init__(self, path, ctx):
            assert ctx == ("cpu", 0)

        def __len__(self):
            return 0

        def get_batch(self, indices):
            raise AssertionError("must not be reached")

    fake.VideoReader = EmptyReader
    monkeypatch.setitem(sys.modules, "decord", fake)
    path = tmp_path / "hollow.mp4"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"hollow\.mp4 has 0 frames"):
        load_video(path, decoder="decord")


def test_audio_only_file(tmp_path):
    av = pytest.importorskip("av", reason=VIDEO_HINT)
    path = tmp_path / "speech.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for _ in range(3):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(ValueError, match=r"speech\.mp4 has no video stream"):
        load_video(path, decoder="pyav")
    if "decord" in available_decoders():
        with pytest.raises(ValueError, match=r"speech\.mp4 is not a readable video"):
            load_video(path, decoder="decord")


@pytest.mark.parametrize("module, decoder", [("decord", "decord"), ("av", "pyav")])
def test_decoder_not_installed(tmp_path, monkeypatch, module, decoder):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"x")
    with pytest.raises(ImportError, match=r'clip\.mp4.*pip install -c constraints\.txt -e "\.\[video\]"'):
        load_video(path, decoder=decoder)


def test_no_decoder_at_all(tmp_path, monkeypatch):
    monkeypatch.setattr(video_io, "available_decoders", lambda: [])
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"x")
    with pytest.raises(
        ImportError, match=r"No video decoder \(decord or PyAV\) is installed to read .*clip\.mp4"
    ):
        load_video(path)
    np.save(tmp_path / "clip.npy", solid_frames(2))
    assert load_video(tmp_path / "clip.npy").shape == (8, 48, 64, 3)  # arrays need no decoder


def test_wrong_decoder_for_the_source(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"x")
    with pytest.raises(ValueError, match="Unknown video decoder 'opencv'"):
        load_video(video, decoder="opencv")
    with pytest.raises(ValueError, match=r"clip\.mp4 is neither a folder of frames nor a \.npy array"):
        load_video(video, decoder="frames")
    with pytest.raises(ValueError, match="is a folder of frames, not a video file"):
        load_video(tmp_path, decoder="pyav")
    np.save(tmp_path / "clip.npy", solid_frames(2))
    with pytest.raises(ValueError, match=r"is a \.npy array of frames"):
        load_video(tmp_path / "clip.npy", decoder="decord")
    with pytest.raises(ValueError, match="num_frames must be at least 1"):
        load_video(tmp_path / "clip.npy", num_frames=0)


def test_frame_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no frames here")
    with pytest.raises(ValueError, match=r"empty holds no frame images"):
        load_video(empty)

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(solid_frames(1, 10, 10)[0]).save(mixed / "0.png")
    Image.fromarray(solid_frames(1, 12, 10)[0]).save(mixed / "1.png")
    with pytest.raises(ValueError, match=r"The frames in .*mixed differ in size"):
        load_video(mixed, num_frames=2)

    broken = tmp_path / "broken"
    broken.mkdir()
    Image.fromarray(solid_frames(1, 10, 10)[0]).save(broken / "0.png")
    (broken / "1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"1\.jpg is not a readable image"):
        load_video(broken, num_frames=2)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((0, 4, 4, 3), np.uint8), r"bad\.npy has 0 frames"),
        (np.zeros((4, 4, 4, 3), np.float32), r"bad\.npy holds a float32 array of shape \(4, 4, 4, 3\)"),
        (np.zeros((4, 4, 4), np.uint8), r"bad\.npy holds a uint8 array of shape \(4, 4, 4\)"),
        (np.zeros((4, 4, 4, 4), np.uint8), r"a video array must be uint8 RGB frames \[N, H, W, 3\]"),
    ],
    ids=["no-frames", "float", "3d", "rgba"],
)
def test_npy_errors(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ValueError, match=message):
        load_video(tmp_path / "bad.npy")


def test_unreadable_npy(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=r"junk\.npy is not a readable \.npy array"):
        load_video(tmp_path / "junk.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"objects\.npy is not a readable \.npy array"):
        load_video(tmp_path / "objects.npy")


def test_find_video_tries_upstream_extensions_in_order(tmp_path):
    assert find_video(tmp_path, "v_abc") is None
    (tmp_path / "v_abc.mkv").write_bytes(b"x")
    assert find_video(tmp_path, "v_abc") == tmp_path / "v_abc.mkv"
    (tmp_path / "v_abc.avi").write_bytes(b"x")
    assert find_video(tmp_path, "v_abc") == tmp_path / "v_abc.avi"
    (tmp_path / "v_abc.mp4").mkdir()  # a folder of that name is not a video
    assert find_video(tmp_path, "v_abc") == tmp_path / "v_abc.avi"


# --- the pixel transform ---------------------------------------------------------------------------------


def bilinear_numpy(plane: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Half-pixel-centre bilinear sampling without anti-aliasing, written from its definition (float64)."""

    def taps(n_in: int, n_out: int):
        centre = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        centre = np.clip(centre, 0.0, None)
        low = np.minimum(np.floor(centre).astype(int), n_in - 1)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, centre - low

    y0, y1, wy = taps(plane.shape[0], out_h)
    x0, x1, wx = taps(plane.shape[1], out_w)
    top = plane[y0][:, x0] * (1 - wx) + plane[y0][:, x1] * wx
    bottom = plane[y1][:, x0] * (1 - wx) + plane[y1][:, x1] * wx
    return top * (1 - wy)[:, None] + bottom * wy[:, None]


def reference_pixels(frames: np.ndarray, resize) -> np.ndarray:
    """Resize the raw 0..255 planes, crop the centre by hand, then normalise: ``[T, 3, 224, 224]`` float64."""
    t, h, w, _ = frames.shape
    new_h, new_w = (int(h / w * 224), 224) if w < h else (224, int(w / h * 224))  # floats, as upstream
    out = np.empty((t, 3, 224, 224))
    top, left = round((new_h - 224) / 2), round((new_w - 224) / 2)
    for i in range(t):
        for c in range(3):
            plane = resize(frames[i, :, :, c].astype(np.float64), new_h, new_w)
            crop = plane[top : top + 224, left : left + 224]
            out[i, c] = (crop / 255.0 - OPENAI_CLIP_MEAN[c]) / OPENAI_CLIP_STD[c]
    return out


def pil_bilinear(plane: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """PIL's bilinear filter on a float image; equals the no-anti-alias filter only when enlarging."""
    image = Image.fromarray(plane.astype(np.float32), mode="F")
    return np.asarray(image.resize((out_w, out_h), Image.Resampling.BILINEAR), dtype=np.float64)


def random_frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(t, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "shape",
    [(3, 300, 400), (2, 400, 250), (2, 240, 240), (1, 481, 853)],
    ids=["landscape", "portrait", "square", "odd"],
)
def test_transform_matches_numpy_bilinear(shape):
    frames = random_frames(*shape)
    pixels = video_pixel_values(frames)
    assert pixels.shape == (shape[0], 3, 224, 224) and pixels.dtype == torch.float32
    # torch computes the sampling positions in float32: ~1e-4 apart at most, while a wrong filter, half-pixel
    # convention or crop is off by 0.1 or more.
    np.testing.assert_allclose(pixels.numpy(), reference_pixels(frames, bilinear_numpy), atol=5e-4, rtol=0)


@pytest.mark.parametrize("shape", [(2, 60, 80), (2, 90, 50)], ids=["landscape", "portrait"])
def test_transform_matches_pil_when_enlarging(shape):
    frames = random_frames(*shape, seed=1)
    expected = reference_pixels(frames, pil_bilinear)
    np.testing.assert_allclose(video_pixel_values(frames).numpy(), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "height, width, top, left",
    [(224, 225, 0, 0), (224, 227, 0, 2), (227, 224, 2, 0), (224, 232, 0, 4), (226, 224, 1, 0)],
)
def test_centre_crop_rounds_half_to_even(height, width, top, left):
    """No resize at a short side of 224, so the output is the normalised crop at upstream's offsets."""
    frames = random_frames(2, height, width, seed=2)
    crop = frames[:, top : top + 224, left : left + 224].astype(np.float64) / 255.0
    expected = ((crop - np.array(OPENAI_CLIP_MEAN)) / np.array(OPENAI_CLIP_STD)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(video_pixel_values(frames).numpy(), expected, atol=1e-6, rtol=0)


def test_short_side_uses_upstream_float_arithmetic():
    """``floor(W / H * 224)`` in floating point, as pytorchvideo: 230 / 224 * 224 = 229.99999999999997 -> 229."""
    assert short_side_size(224, 230) == (224, 229)
    assert short_side_size(230, 224) == (229, 224)
    assert short_side_size(480, 640) == (224, 298)
    assert short_side_size(640, 360) == (398, 224)
    frames = random_frames(1, 224, 230, seed=5)
    not_a_crop = (frames[:, :, 3:227].astype(np.float64) / 255.0 - OPENAI_CLIP_MEAN) / OPENAI_CLIP_STD
    assert np.abs(video_pixel_values(frames).numpy() - not_a_crop.transpose(0, 3, 1, 2)).max() > 0.1


def test_tower_layout_and_tensor_input():
    frames = random_frames(4, 230, 310, seed=3)
    pixels = video_pixel_values(frames)
    tower = languagebind_video_transform(torch.from_numpy(frames))
    assert tower.shape == (3, 4, 224, 224)
    torch.testing.assert_close(tower, pixels.permute(1, 0, 2, 3), rtol=0, atol=0)


def test_flip_only_when_asked_and_reproducible():
    frames = random_frames(2, 224, 300, seed=4)
    plain = video_pixel_values(frames)
    torch.testing.assert_close(video_pixel_values(frames, flip_prob=1.0), plain.flip(-1), rtol=0, atol=0)
    assert not torch.equal(plain, plain.flip(-1))

    def flipped(seed: int) -> bool:
        out = video_pixel_values(frames, flip_prob=0.5, generator=torch.Generator().manual_seed(seed))
        return torch.equal(out, plain.flip(-1))

    outcomes = [flipped(seed) for seed in range(16)]
    assert outcomes == [flipped(seed) for seed in range(16)]  # the generator decides
    assert any(outcomes) and not all(outcomes)
    for seed in range(16):  # flip_prob 0 never draws a flip
        generator = torch.Generator().manual_seed(seed)
        torch.testing.assert_close(video_pixel_values(frames, generator=generator), plain, rtol=0, atol=0)


def test_transform_rejects_bad_frames():
    with pytest.raises(ValueError, match=r"uint8 RGB frames \[T, H, W, 3\]"):
        video_pixel_values(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"uint8 RGB frames \[T, H, W, 3\]"):
        video_pixel_values(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="at least one non-empty frame"):
        video_pixel_values(np.zeros((0, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="flip_prob"):
        video_pixel_values(np.zeros((1, 8, 8, 3), np.uint8), flip_prob=2.0)


def test_decoded_video_to_pixels(mp4_12):
    """End to end: the sampled frames of a solid-colour video give the normalised colour everywhere."""
    require("pyav")
    pixels = video_pixel_values(load_video(mp4_12, decoder="pyav"))
    assert pixels.shape == (8, 3, 224, 224)
    for frame, index in zip(pixels, INDICES_OF_12):
        expected = (np.array(PALETTE[index]) / 255.0 - np.array(OPENAI_CLIP_MEAN)) / np.array(OPENAI_CLIP_STD)
        np.testing.assert_allclose(frame.mean(dim=(1, 2)).numpy(), expected, atol=12 / 255 / 0.26)
