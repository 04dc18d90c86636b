"""ATP-LLaVA: instance- and layer-wise visual-token pruning inside the language model (Ye et al.,
"ATP-LLaVA: Adaptive Token Pruning for Large Vision Language Models", CVPR 2025).

Before each insertion layer l (``atp_layers``, default 4, 14, 24), an ATP module scores the surviving
visual tokens with the attention of layer l - 1, computed from that layer's own queries and keys
(:func:`layer_attention`; every layer keeps its attention kernel):

* a redundancy score: the mean of the min-max normalised attention each visual token receives from the
  visual tokens after it (self-modality) and from the prompt text after the image (cross-modality);
* a spatial score from nested uniform grids over the image's patch grid (strides 2, 4, 8): a token on
  a sparser grid scores higher, so one threshold keeps the 3x3, 6x6 or 12x12 grid (24x24 patches).

A visual token is kept if it passes either threshold (θ_r for redundancy, θ_s for space); text tokens are
never pruned. Inference drops the other tokens physically (:class:`ATP`, run by the decoder-layer hooks of
:mod:`llava.model.token_reduction.in_llm`): kept tokens keep their original positions and the later
layers' KV cache holds only them. θ_r, θ_s are predicted per instance by a small MLP per module
(:class:`ThresholdPredictor`, held by the model as :class:`ATPModules`), or fixed in the options (the
training-free mode). Training keeps every token and multiplies :func:`soft_keep`'s sigmoid masks into a
soft mask that later layers attend through (the ``soft`` mode of the hooks); :func:`budget_losses` are its
loss terms.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from llava.model.token_reduction.base import ReducedTokens, ReducerInputs, full_sequence
from llava.model.token_reduction.config import ReductionConfig, format_layers
from llava.model.token_reduction.in_llm import soft_key_bias
from llava.model.token_reduction.registry import register_reducer

SPATIAL_STRIDES = (2, 4, 8)  # nested sampling grids, densest first
PREDICTOR_WIDTH = 256
PREDICTOR_INIT_BIAS = -4.0  # sigmoid(-4) ≈ 0.018: an untrained module keeps almost every token
NORMALISE_EPS = 1e-6


def layer_attention(
    layer: nn.Module,
    hidden: torch.Tensor,
    cos_sin,
    valid: torch.Tensor,
    head_chunk: int = 8,
    key_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Head-averaged causal attention probabilities of a Llama decoder layer, float32.

    Recomputed from the layer's ``input_layernorm``, ``q_proj``, ``k_proj`` and RoPE, so the layer itself
    runs with any attention kernel. Heads are processed ``head_chunk`` at a time to bound memory.

    Args:
        layer: a Llama decoder layer.
        hidden: ``[B, L, D]`` the layer's input hidden states.
        cos_sin: the rotary embeddings ``(cos, sin)`` of the L positions, ``[B or 1, L, d]`` each.
        valid: ``[B, L]`` bool, real (not padding) tokens; only they are attended.
        key_bias: ``[B, L]`` float added to every query's logit of each key except its own (training's soft
            masks, :func:`soft_mask_bias`), as the layer's attention received it.

    Returns:
        ``[B, L, L]`` rows = queries, columns = keys; each valid row sums to one, keys after the query are 0.
    """
    attn = layer.self_attn
    normed = layer.input_layernorm(hidden)  # [B, L, D]
    batch, length, _ = normed.shape
    q = attn.q_proj(normed).view(batch, length, -1, attn.head_dim).transpose(1, 2)  # [B, H, L, d]
    k = attn.k_proj(normed).view(batch, length, -1, attn.head_dim).transpose(1, 2)  # [B, KV, L, d]
    q, k = apply_rotary_pos_emb(q, k, *cos_sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # grouped-query heads → [B, H, L, d]
    positions = torch.arange(length, device=hidden.device)
    causal = positions[None, :] <= positions[:, None]  # [L, L]
    diagonal = positions[None, :] == positions[:, None]
    allowed = (causal[None] & valid[:, None, :]) | diagonal[None]  # [B, L, L]; a padding row sees itself
    bias = None
    if key_bias is not None:
        bias = key_bias.float()[:, None, None, :].masked_fill(diagonal[None, None], 0.0)  # [B, 1, L, L]
    total = torch.zeros(batch, length, length, dtype=torch.float32, device=hidden.device)
    for start in range(0, q.shape[1], head_chunk):
        qh, kh = q[:, start : start + head_chunk].float(), k[:, start : start + head_chunk].float()
        logits = qh @ kh.transpose(-1, -2) / math.sqrt(attn.head_dim)  # [B, h, L, L]
        if bias is not None:
            logits = logits + bias
        total += logits.masked_fill(~allowed[:, None], float("-inf")).softmax(dim=-1).sum(dim=1)
    return total / q.shape[1]


def text_queries(visual: torch.Tensor, valid: torch.Tensor, query_position: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` bool: the prompt text after the image, up to and including the query (last prompt) token.

    Tokens before the image cannot attend to it; tokens after the query (answers, generated tokens) are
    not prompt. ``visual``, ``valid``: ``[B, L]`` bool; ``query_position``: ``[B]`` long.
    """
    positions = torch.arange(visual.shape[1], device=visual.device)[None]  # [1, L]
    last_visual = torch.where(visual, positions, -1).amax(dim=1, keepdim=True)  # [B, 1]
    return valid & ~visual & (positions > last_visual) & (positions <= query_position[:, None])


def redundancy_scores(
    probs: torch.Tensor, visual: torch.Tensor, queries: torch.Tensor, weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Self- and cross-modality attention each visual token receives (before normalisation).

    Args:
        probs: ``[B, L, L]`` head-averaged causal attention (rows queries, columns keys).
        visual: ``[B, L]`` bool, the surviving visual tokens.
        queries: ``[B, L]`` bool, the text queries (:func:`text_queries`).
        weight: ``[B, L]`` float weights of the visual rows (training: the soft keep mask D, so a token
            on its way out counts less as a query); default: 1 on ``visual``.

    Returns:
        ``(s_self, s_cross)`` ``[B, L]`` float32, zero off ``visual``. ``s_self[j]`` is the mean attention to
        j from the visual tokens at or after j (the only ones that can attend to it, so early raster
        positions are not favoured); ``s_cross[j]`` the mean attention to j from the text queries.
    """
    vis, txt = (visual.float() if weight is None else weight.float() * visual), queries.float()
    from_visual = (probs * vis[:, :, None]).sum(dim=1)  # [B, L] column sums over visual rows
    later_visual = vis.flip(1).cumsum(dim=1).flip(1)  # [B, L] visual rows at or after each position
    s_self = torch.where(visual, from_visual / later_visual.clamp(min=1), 0.0)
    from_text = (probs * txt[:, :, None]).sum(dim=1) / txt.sum(dim=1, keepdim=True).clamp(min=1)  # [B, L]
    s_cross = torch.where(visual, from_text, 0.0)
    return s_self, s_cross


def minmax_normalise(scores: torch.Tensor, mask: torch.Tensor, eps: float = NORMALISE_EPS) -> torch.Tensor:
    """``[B, L]`` ``(s - min) / (max - min + eps)`` over each sample's ``mask`` positions, in [0, 1); 0 elsewhere."""
    low = torch.where(mask, scores, float("inf")).amin(dim=1, keepdim=True)  # [B, 1]
    high = torch.where(mask, scores, float("-inf")).amax(dim=1, keepdim=True)
    low, high = torch.nan_to_num(low, posinf=0.0), torch.nan_to_num(high, neginf=0.0)  # nothing in mask
    return torch.where(mask, (scores - low) / (high - low + eps), 0.0)


def redundancy_score(
    probs: torch.Tensor, visual: torch.Tensor, queries: torch.Tensor, weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(S^r, Ŝ_self, Ŝ_cross)``, ``[B, L]`` each: S^r is the mean of the normalised self- and
    cross-modality scores (all 0 off ``visual``; ``weight`` as in :func:`redundancy_scores`)."""
    s_self, s_cross = redundancy_scores(probs, visual, queries, weight)
    self_hat, cross_hat = minmax_normalise(s_self, visual), minmax_normalise(s_cross, visual)
    return (self_hat + cross_hat) / 2, self_hat, cross_hat


def grid_side(visual_count: torch.Tensor, grid_tokens: int | None = None) -> torch.Tensor:
    """``[B]`` side of each sample's square patch grid (0: no image).

    With ``grid_tokens`` (the tower's patches per image) every sample with an image has that grid, also
    when the prompt was cut at the context length inside the image (its first raster rows survive, so
    their grid positions stay right); without it, the side comes from each sample's ``[B]`` count.
    """
    if grid_tokens is not None:
        side = math.isqrt(grid_tokens)
        bad = visual_count > grid_tokens
        full = torch.where(visual_count > 0, side, 0)
    else:
        full = visual_count.double().sqrt().round().long()
        bad = full * full != visual_count
    if bool(bad.any()):
        raise ValueError(
            f"ATP's spatial grids need one square patch grid per sample; a sample has "
            f"{int(visual_count[bad][0])} visual tokens (one image per prompt is supported)."
        )
    return full


def spatial_levels(side: int) -> list[tuple[int, int]]:
    """``(stride, tokens on that grid)`` of the nested grids of a ``side x side`` patch grid.

    A grid of stride s holds the patches whose row and column are multiples of s: ``ceil(side / s) ** 2``
    tokens (144, 36 and 9 on LLaVA-1.5's 24x24).
    """
    return [(stride, math.ceil(side / stride) ** 2) for stride in SPATIAL_STRIDES]


def spatial_scores(visual_rank: torch.Tensor, side: torch.Tensor, lam: float) -> torch.Tensor:
    """``[B, L]`` S^s: ``1 - lam * R`` for tokens on a grid, R the sampling rate of the sparsest grid holding it.

    Args:
        visual_rank: ``[B, L]`` each visual token's raster index in its image (row-major), -1 elsewhere.
        side: ``[B]`` the patch grid's side per sample.
        lam: λ_sample.

    Returns:
        float32 scores, 0 for tokens on no grid and off the image. Since the grids are nested, ``S^s > θ``
        keeps whole grids: on 24x24 with λ = 3 the values are 0.953 (3x3), 0.8125 (6x6), 0.25 (12x12).
    """
    side = side[:, None].clamp(min=1)  # [B, 1]
    row, col = visual_rank // side, visual_rank % side
    scores = torch.zeros(visual_rank.shape, dtype=torch.float32, device=visual_rank.device)
    for stride in SPATIAL_STRIDES:  # densest first: a sparser grid overrides the denser one's score
        on_grid = (visual_rank >= 0) & (row % stride == 0) & (col % stride == 0)
        rate = (side + stride - 1).div(stride, rounding_mode="floor").square().float() / side.square()
        scores = torch.where(on_grid, 1 - lam * rate, scores)
    return scores


def predictor_input(
    self_hat: torch.Tensor, cross_hat: torch.Tensor, visual_rank: torch.Tensor, num_tokens: int
) -> torch.Tensor:
    """``[B, 2N]`` the threshold predictor's input: normalised self scores in the image's raster layout,
    then the cross scores; pruned and absent positions are 0. Scores and ranks are ``[B, L]``."""
    batch = self_hat.shape[0]
    out = self_hat.new_zeros(batch, 2 * num_tokens + 1)  # the last slot collects non-visual positions
    visual = visual_rank >= 0
    out.scatter_(1, torch.where(visual, visual_rank, 2 * num_tokens), torch.where(visual, self_hat, 0.0))
    out.scatter_(
        1, torch.where(visual, visual_rank + num_tokens, 2 * num_tokens), torch.where(visual, cross_hat, 0.0)
    )
    return out[:, : 2 * num_tokens]


class ThresholdPredictor(nn.Module):
    """One ATP module's thresholds: ``z = GELU(W u + b)``, ``θ_r = σ(w_r·z + b_r)``, ``θ_s = σ(w_s·z + b_s)``.

    ``u`` is :func:`predictor_input` (2N = 1152 on 24x24). Weights start at N(0, 0.02) and the two head
    biases at -4, so an untrained module keeps almost every token. The parameters are held directly (no
    ``nn.Linear`` children), so LoRA never wraps them and a checkpoint without them is initialised by
    :meth:`reset_parameters` as a whole. The heads run in float32 whatever the weights' dtype.
    """

    def __init__(self, num_tokens: int = 576, width: int = PREDICTOR_WIDTH) -> None:
        super().__init__()
        self.num_tokens, self.width = num_tokens, width
        self.hidden_weight = nn.Parameter(torch.empty(width, 2 * num_tokens))
        self.hidden_bias = nn.Parameter(torch.empty(width))
        self.head_weight = nn.Parameter(torch.empty(2, width))  # rows: redundancy, spatial
        self.head_bias = nn.Parameter(torch.empty(2))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.normal_(self.hidden_weight, std=0.02)
        nn.init.zeros_(self.hidden_bias)
        nn.init.normal_(self.head_weight, std=0.02)
        nn.init.constant_(self.head_bias, PREDICTOR_INIT_BIAS)

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``u`` ``[B, 2N]`` → ``(θ_r, θ_s)``, ``[B]`` each, float32 in (0, 1)."""
        weight, bias = self.hidden_weight.float(), self.hidden_bias.float()
        z = nn.functional.gelu(nn.functional.linear(u.float(), weight, bias))  # [B, width]
        theta = nn.functional.linear(z, self.head_weight.float(), self.head_bias.float()).sigmoid()  # [B, 2]
        return theta[:, 0], theta[:, 1]


class ATPModules(nn.Module):
    """The trained ATP modules of a checkpoint: one :class:`ThresholdPredictor` per insertion layer.

    Held by the language model as ``model.atp_modules`` (weights ``model.atp_modules.predictors.<layer>.*``);
    ``config.mm_atp_layers`` records their layers so that the checkpoint rebuilds them at load.
    """

    def __init__(self, layers: tuple[int, ...] | list[int], num_tokens: int, width: int = PREDICTOR_WIDTH):
        super().__init__()
        self.layers = tuple(int(layer) for layer in layers)
        self.num_tokens = num_tokens
        self.predictors = nn.ModuleDict(
            {str(layer): ThresholdPredictor(num_tokens, width) for layer in self.layers}
        )

    def predictor(self, insertion_layer: int) -> ThresholdPredictor:
        return self.predictors[str(insertion_layer)]


def _per_sample(theta: torch.Tensor | float) -> torch.Tensor | float:
    """A ``[B]`` threshold as ``[B, 1]`` (to compare with ``[B, L]`` scores); a float as it is."""
    return theta[:, None] if isinstance(theta, torch.Tensor) and theta.ndim == 1 else theta


def soft_keep(
    s_r: torch.Tensor,
    s_s: torch.Tensor,
    theta_r: torch.Tensor | float,
    theta_s: torch.Tensor | float,
    temperature: float,
) -> torch.Tensor:
    """``[B, L]`` the soft mask ``max(σ((S^r - θ_r) / τ), σ((S^s - θ_s) / τ))`` (θ: a float or ``[B]``).

    Above 0.5 exactly where :func:`hard_keep` keeps the token.
    """
    theta_r, theta_s = _per_sample(theta_r), _per_sample(theta_s)
    return torch.maximum(((s_r - theta_r) / temperature).sigmoid(), ((s_s - theta_s) / temperature).sigmoid())


def hard_keep(
    s_r: torch.Tensor, s_s: torch.Tensor, theta_r: torch.Tensor | float, theta_s: torch.Tensor | float
) -> torch.Tensor:
    """``[B, L]`` bool: ``S^r > θ_r`` or ``S^s > θ_s`` (θ: a float or ``[B]``)."""
    return (s_r > _per_sample(theta_r)) | (s_s > _per_sample(theta_s))


def layer_token_counts(
    initial: torch.Tensor, kept: list[torch.Tensor], insertion_layers: tuple[int, ...], num_layers: int
) -> torch.Tensor:
    """``[B, num_layers]`` visual tokens each layer runs on.

    Args:
        initial: ``[B]`` visual tokens before any pruning (every layer before the first insertion layer).
        kept: ``[B]`` per insertion layer, the visual tokens kept from that layer on.
        insertion_layers: the layers the counts in ``kept`` start at, increasing.
        num_layers: decoder layers of the language model.
    """
    counts = initial[:, None].expand(-1, num_layers).clone()
    for layer, count in zip(insertion_layers, kept, strict=True):
        counts[:, layer:] = count[:, None]
    return counts


def average_visual_tokens(
    initial: torch.Tensor, kept: list[torch.Tensor], insertion_layers: tuple[int, ...], num_layers: int
) -> torch.Tensor:
    """``[B]`` N̄: visual tokens averaged over all ``num_layers`` layers, the unpruned ones included
    (the paper's "Token" column; e.g. 576 up to layer 3 and 144 after: (4·576 + 28·144) / 32 = 198)."""
    return layer_token_counts(initial, kept, insertion_layers, num_layers).float().mean(dim=1)


def soft_average_tokens(
    initial: torch.Tensor, kept: list[torch.Tensor], insertion_layers: tuple[int, ...], num_layers: int
) -> torch.Tensor:
    """``[B]`` float N̄ from soft counts (differentiable): :func:`average_visual_tokens` written as a sum,
    ``(ℓ_1 N_0 + Σ_k (ℓ_{k+1} - ℓ_k) N_k) / L`` with ``ℓ_{K+1} = L``."""
    bounds = (*insertion_layers, num_layers)
    total = insertion_layers[0] * initial.float()
    for k, count in enumerate(kept):
        total = total + (bounds[k + 1] - bounds[k]) * count
    return total / num_layers


def budget_losses(
    initial: torch.Tensor,
    kept: list[torch.Tensor],
    insertion_layers: tuple[int, ...],
    num_layers: int,
    target: float,
) -> dict[str, torch.Tensor]:
    """ATP's training terms from the soft counts ``N_k`` (``[B]`` per module) of one batch.

    ``L_ATP = (1/K) Σ_k (ℓ_k / L) (N_k / N_0)`` (a kept token costs more the deeper its layer) and
    ``L_target = |N̄ - N_target| / N_0``, each averaged over the samples with an image (0 without any).
    Also the detached means over those samples of N_k per module (``kept``) and of N̄ (``mean_tokens``).
    """
    has_image = (initial > 0).float()  # [B]
    samples = has_image.sum().clamp(min=1)
    n0 = initial.float().clamp(min=1)
    depth = torch.stack([count * (layer / num_layers) for layer, count in zip(insertion_layers, kept)])
    l_atp = depth.mean(dim=0) / n0  # [B]
    nbar = soft_average_tokens(initial, kept, insertion_layers, num_layers)
    l_target = (nbar - target).abs() / n0
    return {
        "budget": (l_atp * has_image).sum() / samples,
        "target": (l_target * has_image).sum() / samples,
        "kept": torch.stack([(count * has_image).sum() / samples for count in kept]).detach(),
        "mean_tokens": ((nbar * has_image).sum() / samples).detach(),
    }


class ATP:
    """ATP as an in-LLM method: one module before each insertion layer, at inference and in training.

    The module before insertion layer l runs on layer l - 1's call: it scores from that layer's input and
    attention, and the hooks apply its decision from that layer's output on (``prune_layers`` = l - 1).
    At inference (:meth:`keep`) tokens are dropped; in training (:meth:`soft_mask`) the soft mask joins
    the cumulative mask D that later layers receive as an attention bias. The thresholds come from the
    model's trained modules (:meth:`bind`), or are the fixed ``atp_redundancy_threshold`` /
    ``atp_spatial_threshold`` of the options when given (the training-free mode; they take precedence).
    """

    def __init__(self, config: ReductionConfig) -> None:
        self.config = config
        self.insertion_layers = tuple(config.atp_layers)
        self.prune_layers = tuple(layer - 1 for layer in self.insertion_layers)
        self.modules: ATPModules | None = None
        self.num_layers: int | None = None
        self.grid_tokens: int | None = None  # the tower's patches per image, when the model says

    @property
    def fixed(self) -> bool:
        """Whether the options fix both thresholds (the training-free mode)."""
        return (
            self.config.atp_redundancy_threshold is not None and self.config.atp_spatial_threshold is not None
        )

    def check_layers(self, num_layers: int) -> None:
        """Raises unless every insertion layer is in 1..num_layers-1."""
        outside = [layer for layer in self.insertion_layers if layer >= num_layers]
        if outside:
            raise ValueError(
                f"atp_layers={format_layers(self.insertion_layers)}: insertion layer(s) {outside} are out of "
                f"range for this {num_layers}-layer language model; choose layers in 1..{num_layers - 1} "
                "(--reduction-atp-layers)."
            )
        self.num_layers = num_layers

    def bind(self, modules: ATPModules | None, grid_tokens: int | None = None) -> None:
        """Attaches the model's ATP modules and the tower's patches per image (``grid_tokens``); without
        fixed thresholds, trained modules for these layers are required."""
        self.grid_tokens = grid_tokens
        if modules is not None and modules.layers == self.insertion_layers:
            self.modules = modules
        if self.fixed:
            return
        if modules is None:
            raise ValueError(
                "The 'atp' reducer predicts its thresholds with trained ATP modules, and this checkpoint has "
                "none (its config.json records no mm_atp_layers). Use a checkpoint trained with "
                "--token_reduction atp (scripts/v1_5/finetune_atp.sh), or run training-free with fixed "
                "thresholds: --reduction-atp-redundancy-threshold 0.5 --reduction-atp-spatial-threshold 0.9 "
                "(atp_redundancy_threshold= and atp_spatial_threshold= in Python; -1 and -1 keep every token)."
            )
        if modules.layers != self.insertion_layers:
            raise ValueError(
                f"This checkpoint's ATP modules were trained for layers {format_layers(modules.layers)}, not "
                f"atp_layers={format_layers(self.insertion_layers)}: use --reduction-atp-layers "
                f"{format_layers(modules.layers)}, or give fixed thresholds."
            )

    def before_layer(self, layer_idx, layer, hidden, layer_kwargs, step) -> None:
        """S^r, S^s and the predictor's input for every surviving visual token, from this layer's attention
        (its own q/k; in training with the soft-mask bias the layer received). Detached: no gradient."""
        soft = step.mode == "soft"
        surviving = step.visual & (step.soft_keep > 0.5) if soft else step.visual
        with torch.no_grad():
            probs = layer_attention(
                layer,
                hidden,
                layer_kwargs["position_embeddings"],
                step.valid,
                key_bias=soft_key_bias(step.soft_keep, step.visual) if soft and step.soft_counts else None,
            )
            queries = text_queries(step.visual, step.valid, step.query_position())
            weight = step.soft_keep if soft else None
            s_r, self_hat, cross_hat = redundancy_score(probs, surviving, queries, weight)
            side = grid_side(step.visual_count, self.grid_tokens)
            s_s = spatial_scores(step.visual_rank, side, self.config.atp_spatial_lambda)
            u = None
            if self.modules is not None and not self.fixed:
                rank = step.visual_rank.masked_fill(~surviving, -1)
                self._check_tokens(rank)
                u = predictor_input(self_hat, cross_hat, rank, self.modules.num_tokens)
        step.scores[layer_idx] = (s_r, s_s, u)

    def _check_tokens(self, rank: torch.Tensor) -> None:
        if int(rank.max()) >= self.modules.num_tokens:
            raise ValueError(
                f"This checkpoint's ATP modules take {self.modules.num_tokens} visual tokens per image; a prompt "
                f"has {int(rank.max()) + 1}. ATP needs every image to bring the tower's full patch grid."
            )

    def thresholds(self, layer_idx: int, u: torch.Tensor | None, step) -> tuple:
        """θ_r, θ_s of the module before insertion layer ``layer_idx + 1``: fixed floats, or ``[B]`` predicted."""
        if self.fixed:
            theta = (self.config.atp_redundancy_threshold, self.config.atp_spatial_threshold)
        else:
            theta = self.modules.predictor(layer_idx + 1)(u)
        step.thresholds[layer_idx] = theta
        return theta

    def keep(self, layer_idx, hidden, step) -> torch.Tensor:
        s_r, s_s, u = step.scores.pop(layer_idx)
        theta_r, theta_s = self.thresholds(layer_idx, u, step)
        passed = hard_keep(s_r, s_s, theta_r, theta_s)
        return step.valid & (~step.visual | passed)

    def soft_mask(self, layer_idx, hidden, step) -> torch.Tensor:
        """``[B, L]`` training's soft mask M of this module (1 on text), differentiable in the thresholds."""
        s_r, s_s, u = step.scores.pop(layer_idx)
        theta_r, theta_s = self.thresholds(layer_idx, u, step)
        mask = soft_keep(s_r, s_s, theta_r, theta_s, self.config.atp_temperature)
        return torch.where(step.visual, mask, 1.0)

    def training_outputs(self, step) -> dict[str, torch.Tensor]:
        """The model output's ATP fields of a training forward: the two loss terms and what to log."""
        target = self.config.atp_target_tokens
        if target is None:
            raise ValueError("Training ATP needs a token budget: --reduction_atp_target_tokens 144 (or 88).")
        terms = budget_losses(
            step.visual_count, step.soft_counts, self.insertion_layers, self.num_layers, float(target)
        )
        anchor = sum(
            (
                t.sum() * 0.0
                for theta in step.thresholds.values()
                for t in theta
                if isinstance(t, torch.Tensor)
            ),
            torch.zeros((), device=step.visual_count.device),
        )  # every threshold head takes part in the graph, also on batches without images (DDP, ZeRO-3)
        return {
            "atp_budget_loss": terms["budget"] + anchor,
            "atp_target_loss": terms["target"],
            "atp_kept_tokens": terms["kept"],
            "atp_mean_tokens": terms["mean_tokens"],
        }


def reduce_atp(inputs: ReducerInputs, config: ReductionConfig) -> ReducedTokens:
    """The tower keeps every token; ATP prunes inside the language model. Checks what needs the tower."""
    rows, cols = inputs.grid
    if rows != cols:
        raise ValueError(f"ATP's spatial grids need a square patch grid; this tower gives {rows}x{cols}.")
    n = inputs.features.shape[1]
    if config.atp_target_tokens is not None and config.atp_target_tokens > n:
        raise ValueError(
            f"atp_target_tokens={config.atp_target_tokens} is more than the {n} visual tokens this vision "
            f"tower produces per image; choose at most {n}."
        )
    return full_sequence(inputs)


def _check_atp(config: ReductionConfig) -> None:
    layers = config.atp_layers
    if not layers or min(layers) < 1 or any(b <= a for a, b in zip(layers, layers[1:])):
        raise ValueError(
            f"atp_layers must be increasing decoder-layer indices >= 1 (e.g. 4,14,24: the input layers of "
            f"the pruned segments), got {format_layers(layers) or 'none'}."
        )
    if config.atp_target_tokens is not None and config.atp_target_tokens < 1:
        raise ValueError(
            f"atp_target_tokens must be a positive number of tokens, got {config.atp_target_tokens}."
        )
    if not config.atp_temperature > 0:
        raise ValueError(f"atp_temperature must be > 0, got {config.atp_temperature}.")
    if not config.atp_spatial_lambda >= 0:
        raise ValueError(f"atp_spatial_lambda must be >= 0, got {config.atp_spatial_lambda}.")
    thresholds = (config.atp_redundancy_threshold, config.atp_spatial_threshold)
    if None in thresholds and thresholds != (None, None):
        raise ValueError(
            "Give both fixed ATP thresholds, atp_redundancy_threshold and atp_spatial_threshold "
            "(1 for either disables that branch)."
        )


register_reducer(
    "atp",
    needs_attention=False,
    description="ATP-LLaVA: prune visual tokens at several LLM layers by redundancy and spatial thresholds",
    options=(
        "atp_layers",
        "atp_target_tokens",
        "atp_temperature",
        "atp_spatial_lambda",
        "atp_redundancy_threshold",
        "atp_spatial_threshold",
    ),
    check=_check_atp,
    in_llm_method=ATP,
)(reduce_atp)
