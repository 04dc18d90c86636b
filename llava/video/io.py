"""Reading a video as the 8 frames Video-LLaVA sees: frame indices, decoders and frame arrays.

Video-LLaVA (``LanguageBindVideoProcessor``) decodes with decord, takes ``n = len(reader)`` and the
frames ``np.linspace(0, n - 1, 8, dtype=int)``: the first and the last frame always, spread evenly over
the whole video however long it is. :func:`load_video` does the same with any of its sources:

* ``decord`` (the reference decoder, ``pip install -e ".[video]"``): ``VideoReader(path, ctx=cpu(0))``,
  the indices over ``len(reader)`` (the frame count decord's index of the container reports);
* ``pyav`` (PyAV, the fallback): the indices over the frames that PyAV actually decodes (one pass to
  count them, a second one to keep the chosen ones, so memory stays at ``num_frames`` frames). For a
  well-formed file the two counts agree; for a damaged or variable-frame-rate file they can differ by a
  few frames, so the chosen frames can differ slightly from decord's;
* a folder of frame images, in the order of their file names (digit runs compared as numbers, so
  ``frame_2.jpg`` comes before ``frame_10.jpg``), or a ``.npy`` array ``[N, H, W, 3]`` of uint8 RGB
  (read memory-mapped): the indices over its N frames, no decoder needed.

Every error names the file: a missing path raises :class:`FileNotFoundError`; a file no decoder can
read, a video without frames or a wrongly shaped array raises :class:`ValueError`; a missing decoder
package raises :class:`ImportError` with the install command.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: The decoders :func:`load_video` accepts; ``auto`` prefers decord (the reference) over PyAV.
DECODERS = ("auto", "decord", "pyav", "frames")
#: The extensions Video-LLaVA's evaluation tries for a video name, in its order.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
#: The file names read from a folder of frames (case-insensitive); other files are ignored.
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: Video-LLaVA's frame count.
NUM_FRAMES = 8

INSTALL_HINT = 'install a video decoder with `pip install -c constraints.txt -e ".[video]"`'


def sample_frame_indices(
    n_frames: int, num: int = NUM_FRAMES, *, source: str | Path | None = None
) -> np.ndarray:
    """Video-LLaVA's frame choice: ``np.linspace(0, n_frames - 1, num, dtype=int)`` (int64).

    The first and the last frame are always included and the indices repeat when the video has fewer
    than ``num`` frames (``n_frames=5`` gives ``[0, 0, 1, 1, 2, 2, 3, 4]``).

    Raises:
        ValueError: ``n_frames`` is below 1 (the message names ``source`` when given) or ``num`` is below 1.
    """
    if num < 1:
        raise ValueError(f"num_frames must be at least 1, got {num}")
    if n_frames < 1:
        where = f"{source} has" if source is not None else "the video has"
        raise ValueError(
            f"{where} {n_frames} frames, so no frame can be sampled; check that the file is a complete "
            "video (play it, or re-encode it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`)"
        )
    return np.linspace(0, n_frames - 1, num, dtype=np.int64)


def available_decoders() -> list[str]:
    """The installed video decoders, preferred first (``decord``, ``pyav``)."""
    found = []
    if importlib.util.find_spec("decord") is not None:
        found.append("decord")
    if importlib.util.find_spec("av") is not None:
        found.append("pyav")
    return found


def load_video(path: str | Path, num_frames: int = NUM_FRAMES, decoder: str = "auto") -> np.ndarray:
    """The ``num_frames`` frames Video-LLaVA samples from ``path``, as uint8 RGB ``[T, H, W, 3]``.

    ``path`` is a video file, a folder of frame images or a ``.npy`` array ``[N, H, W, 3]`` (uint8).
    ``decoder``: ``auto`` (a folder or ``.npy`` is read directly; a video with decord if installed, else
    PyAV), ``decord``, ``pyav`` or ``frames`` (only a folder or ``.npy``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unknown decoder, a source the decoder cannot read, or no frames in it.
        ImportError: the chosen decoder (or, for ``auto``, any decoder) is not installed.
    """
    if decoder not in DECODERS:
        raise ValueError(f"Unknown video decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"Video not found: {path}. Check the video folder and name (Video-LLaVA's evaluation tries "
            f"the extensions {', '.join(VIDEO_EXTENSIONS)})."
        )
    is_frames = path.is_dir() or path.suffix.lower() == ".npy"
    if decoder == "frames" and not is_frames:
        raise ValueError(
            f"{path} is neither a folder of frames nor a .npy array; use decoder 'auto', 'decord' or 'pyav'"
        )
    if decoder in ("decord", "pyav") and is_frames:
        raise ValueError(
            f"{path} is a {'folder' if path.is_dir() else '.npy array'} of frames, not a video file; "
            "use decoder 'auto' or 'frames'"
        )
    if is_frames:
        if path.is_dir():
            return _load_frame_folder(path, num_frames)
        return _load_npy(path, num_frames)
    if decoder == "auto":
        installed = available_decoders()
        if not installed:
            raise ImportError(
                f"No video decoder (decord or PyAV) is installed to read {path}: {INSTALL_HINT}"
            )
        decoder = installed[0]
    if decoder == "decord":
        return _load_decord(path, num_frames)
    return _load_pyav(path, num_frames)


def _load_decord(path: Path, num_frames: int) -> np.ndarray:
    try:
        import decord
    except ImportError as err:
        raise ImportError(f"decord is not installed (needed to read {path}): {INSTALL_HINT}") from err
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        n = len(reader)
    except Exception as err:  # decord raises RuntimeError or its own DECORDError
        raise _unreadable(path, "decord", err) from err
    indices = sample_frame_indices(n, num_frames, source=path)
    try:
        frames = reader.get_batch(indices.tolist()).asnumpy()
    except Exception as err:
        raise _unreadable(path, "decord", err) from err
    return _checked(frames, path, num_frames)


def _load_pyav(path: Path, num_frames: int) -> np.ndarray:
    try:
        import av
    except ImportError as err:
        raise ImportError(f"PyAV is not installed (needed to read {path}): {INSTALL_HINT}") from err

    def read(keep: set[int] | None) -> tuple[int, dict[int, np.ndarray]]:
        """One decoding pass: the number of frames decoded and the RGB arrays of the positions in ``keep``."""
        kept: dict[int, np.ndarray] = {}
        count = 0
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream (audio only?); give a video file")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if keep is not None:
                    if count in keep:
                        kept[count] = frame.to_ndarray(format="rgb24")
                    if count >= max(keep):
                        return count + 1, kept
                count += 1
        return count, kept

    try:
        n, _ = read(None)
        indices = sample_frame_indices(n, num_frames, source=path)
        _, kept = read({int(i) for i in indices})
    except av.error.FFmpegError as err:  # e.g. InvalidDataError (also a ValueError) for a damaged file
        raise _unreadable(path, "pyav", err) from err
    if {int(i) for i in indices} - kept.keys():
        raise ValueError(
            f"{path}: PyAV decoded {n} frames in a first pass but fewer in a second one; the file is "
            "damaged or changed while being read"
        )
    return _checked(np.stack([kept[int(i)] for i in indices]), path, num_frames)


def _natural_key(name: str) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def frame_files(folder: Path) -> list[Path]:
    """The frame images of ``folder`` in reading order: by file name, digit runs compared as numbers."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS]
    return sorted(files, key=lambda p: (_natural_key(p.name), p.name))


def _load_frame_folder(folder: Path, num_frames: int) -> np.ndarray:
    from llava.mm_utils import load_image

    files = frame_files(folder)
    if not files:
        raise ValueError(
            f"{folder} holds no frame images (looked for {', '.join(FRAME_EXTENSIONS)}); put the frames "
            "there, named in time order, or pass a video file"
        )
    indices = sample_frame_indices(len(files), num_frames, source=folder)
    frames = [np.asarray(load_image(files[i])) for i in indices]
    sizes = {frame.shape for frame in frames}
    if len(sizes) > 1:
        raise ValueError(
            f"The frames in {folder} differ in size ({sorted(sizes)}); all frames of a video must have the "
            "same height and width"
        )
    return _checked(np.stack(frames), folder, num_frames)


def _load_npy(path: Path, num_frames: int) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable .npy array: {err}") from err
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(
            f"{path} holds a {array.dtype} array of shape {tuple(array.shape)}; a video array must be "
            "uint8 RGB frames [N, H, W, 3]"
        )
    indices = sample_frame_indices(array.shape[0], num_frames, source=path)
    return _checked(np.ascontiguousarray(array[indices]), path, num_frames)


def _unreadable(path: Path, decoder: str, err: BaseException) -> ValueError:
    other = "pyav" if decoder == "decord" else "decord"
    return ValueError(
        f"{path} is not a readable video ({decoder}: {type(err).__name__}: {str(err).strip()[:300]}). "
        f"Check that the file is complete, try decoder={other!r}, or re-encode it "
        "(e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`)."
    )


def _checked(frames: np.ndarray, path: Path, num_frames: int) -> np.ndarray:
    """``frames`` as contiguous uint8 ``[num_frames, H, W, 3]`` (a decoder's output is checked, not trusted)."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != num_frames or frames.shape[-1] != 3:
        raise ValueError(
            f"{path}: expected uint8 frames [{num_frames}, H, W, 3], got {frames.dtype} {frames.shape}"
        )
    return np.ascontiguousarray(frames)


def find_video(video_dir: str | Path, name: str, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> Path | None:
    """``video_dir/name.ext`` for the first of ``extensions`` that exists (Video-LLaVA's lookup), else None."""
    for ext in extensions:
        candidate = Path(video_dir) / f"{name}{ext}"
        if candidate.is_file():
            return candidate
    return None
