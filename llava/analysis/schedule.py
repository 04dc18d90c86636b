"""Per-layer visual-token schedules (in-LLM pruning: FastV, ATP-LLaVA) and video token counts.

A schedule lists the visual tokens each decoder layer runs on, e.g. ``[576] * 4 + [106] * 10 + [81] * 10 +
[19] * 8`` for ATP-LLaVA pruning at layers 4, 14 and 24 (the counts of the answer files'
``visual_tokens_per_layer``). Its compact form joins runs as ``COUNTxLAYERS``: ``576x4,106x10,81x10,19x8``.
"""

from __future__ import annotations

from collections.abc import Sequence


def parse_schedule(text: str) -> list[int]:
    """Per-layer counts from ``COUNTxLAYERS`` runs and plain counts, comma-separated (``576x3,288x29``).

    Raises:
        ValueError: a part is not ``N`` or ``NxM`` with N >= 0 and M >= 1.
    """
    counts: list[int] = []
    for part in text.replace(" ", "").split(","):
        count, sep, repeat = part.partition("x")
        try:
            n, m = int(count), int(repeat) if sep else 1
        except ValueError:
            raise ValueError(
                f"schedule {text!r}: {part!r} is not COUNT or COUNTxLAYERS (e.g. 576x4,106x10,81x10,19x8)"
            ) from None
        if n < 0 or m < 1:
            raise ValueError(f"schedule {text!r}: {part!r} needs a count >= 0 and a number of layers >= 1")
        counts += [n] * m
    return counts


def format_schedule(counts: Sequence[int]) -> str:
    """The compact form of per-layer counts (runs of equal counts as ``COUNTxLAYERS``)."""
    runs: list[list[int]] = []
    for n in counts:
        if runs and runs[-1][0] == n:
            runs[-1][1] += 1
        else:
            runs.append([n, 1])
    return ",".join(f"{n}x{m}" if m > 1 else str(n) for n, m in runs)


def mean_tokens(counts: Sequence[int]) -> float:
    """N̄: the mean over all layers, the unpruned ones included (ATP-LLaVA's "Token" column)."""
    return sum(counts) / len(counts)


def fastv_schedule(visual_tokens: int, layers: int, llm_layer: int, ratio: float) -> list[int]:
    """FastV's schedule as ``fastv`` runs here: layers ``0..llm_layer`` on every visual token, the later ones
    on ``round(visual_tokens * ratio)`` (at least 1), as ``--reduction-llm-layer K --reduction-ratio R``.

    Raises:
        ValueError: ``llm_layer`` is not a layer of the model, or ``ratio`` is not in (0, 1].
    """
    if not 0 <= llm_layer < layers:
        raise ValueError(f"FastV layer K={llm_layer} is not in 0..{layers - 1}")
    if not 0 < ratio <= 1:
        raise ValueError(f"FastV ratio {ratio} (the share of visual tokens kept) must be in (0, 1]")
    kept = min(max(round(visual_tokens * ratio), 1), visual_tokens)
    return [visual_tokens] * (llm_layer + 1) + [kept] * (layers - llm_layer - 1)


def parse_fastv(text: str) -> tuple[int, float]:
    """``K:R`` → ``(K, R)``: the layer after which FastV prunes and the share of visual tokens it keeps."""
    layer, sep, ratio = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(layer), float(ratio)
    except ValueError:
        raise ValueError(f"--fastv {text!r}: expected K:R, e.g. 2:0.5") from None


def video_tokens(frames: int, tokens_per_frame: int) -> dict[str, int]:
    """Visual tokens of a video (Video-LLaVA: 8 frames x 257 = CLS + 16 x 16 patches) for each preset.

    ``none`` keeps every token; ``prumerge`` and ``prumerge_plus`` are the fixed 1/8 forms run per frame,
    each frame keeping its CLS: CLS + N // 8 + 1 (the extra token) and at most CLS + 2 (N // 8) + 1 tokens
    for N = ``tokens_per_frame - 1`` patches (2056, 272 and 528 for 8 x 257).

    Raises:
        ValueError: fewer than one frame or two tokens per frame.
    """
    if frames < 1 or tokens_per_frame < 2:
        raise ValueError(
            f"a video needs >= 1 frame and >= 2 tokens per frame, got {frames} x {tokens_per_frame}"
        )
    patches = tokens_per_frame - 1
    return {
        "none": frames * tokens_per_frame,
        "prumerge": frames * (1 + patches // 8 + 1),
        "prumerge_plus": frames * (1 + 2 * (patches // 8) + 1),
    }
