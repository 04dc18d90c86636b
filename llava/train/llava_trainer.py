"""``LLaVATrainer``: modality-grouped sampling, a projector learning rate, and LLaVA's checkpoint formats.

Checkpoints (``checkpoint-N`` and the final folder):

- pretraining (``--tune_mm_mlp_adapter``): ``mm_projector.bin`` and ``config.json`` only;
- LoRA: the PEFT adapter plus ``non_lora_trainables.bin`` (the projector) and ``config.json`` in
  *every* checkpoint, so any of them loads with ``--model-base`` and ``--resume_from_checkpoint``
  continues the run with its projector;
- full finetuning: the usual transformers checkpoint.

Under DeepSpeed ZeRO-3 the parameters are gathered for saving (:mod:`llava.train.zero`). Every
``config.json`` written here records in ``dtype`` the dtype of the weights written beside it.

Mixed precision: without DeepSpeed, ``--fp16``/``--bf16`` are accelerate's autocast over float32 weights
(on CPU, where accelerate runs no float16 autocast, this trainer turns on torch's; see
:meth:`LLaVATrainer.create_accelerator_and_postprocess`). A non-finite training loss stops the run
before the weights are updated with it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Sampler
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from llava.train.zero import gathered_state

logger = logging.getLogger("llava.train")


def _balanced_chunks(indices: list[int], lengths: list[int], parts: int) -> list[list[int]]:
    """Splits ``indices`` into ``parts`` lists of equal size whose total lengths are close."""
    if len(indices) % parts:
        return [indices[i::parts] for i in range(parts)]
    size = len(indices) // parts
    chunks: list[list[int]] = [[] for _ in range(parts)]
    totals = [0] * parts
    for index in indices:
        best = min((k for k in range(parts) if len(chunks[k]) < size), key=lambda k: totals[k])
        chunks[best].append(index)
        totals[best] += lengths[index]
    return chunks


def _megabatches(indices: list[int], sizes: list[int], batch: int, world: int) -> list[list[int]]:
    """Megabatches of ``batch * world`` indices, each sorted longest first and balanced over ``world``.

    ``sizes`` are the absolute lengths of the whole dataset, built once by the caller (rebuilding them per
    megabatch made an epoch's order quadratic in the dataset size).
    """
    step = batch * world
    out = []
    for start in range(0, len(indices), step):
        mega = sorted(indices[start : start + step], key=sizes.__getitem__, reverse=True)
        out.append([i for chunk in _balanced_chunks(mega, sizes, world) for i in chunk])
    return out


def modality_grouped_indices(
    lengths: list[int], batch: int, world: int, generator: torch.Generator
) -> list[int]:
    """An epoch's order in which every global step is one modality (image: length > 0, text: < 0).

    Within each modality: a random permutation cut into megabatches (one global step each). All
    megabatches but the last of each modality are shuffled together; the two last ones are merged,
    sorted by index, and come at the end.
    """

    def permuted(group: list[int]) -> list[int]:
        return [group[i] for i in torch.randperm(len(group), generator=generator).tolist()]

    lengths = list(lengths)  # one pass over the caller's sequence
    sizes = [abs(n) for n in lengths]
    image = [i for i, n in enumerate(lengths) if n > 0]
    text = [i for i, n in enumerate(lengths) if n < 0]
    if not image or not text:
        return [
            i for mega in _megabatches(permuted(list(range(len(lengths)))), sizes, batch, world) for i in mega
        ]
    image_megas = _megabatches(permuted(image), sizes, batch, world)
    text_megas = _megabatches(permuted(text), sizes, batch, world)
    tail = sorted(image_megas.pop() + text_megas.pop())
    megas = image_megas + text_megas
    megas = [megas[i] for i in torch.randperm(len(megas), generator=generator).tolist()]
    return [i for mega in megas for i in mega] + tail


class ModalityLengthGroupedSampler(Sampler[int]):
    """Upstream's ``--group_by_modality_length``: single-modality global steps, similar lengths together."""

    def __init__(self, lengths: list[int], batch_size: int, world_size: int, seed: int = 0) -> None:
        self.lengths, self.batch_size, self.world_size, self.seed = lengths, batch_size, world_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(modality_grouped_indices(self.lengths, self.batch_size, self.world_size, generator))


class LLaVATrainer(Trainer):
    """transformers' Trainer with LLaVA's sampler, optimizer groups and checkpoint formats."""

    def __init__(self, *args: Any, llava_config=None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.llava_config = llava_config  # the LlavaConfig written beside every checkpoint
        self.num_truncated = 0
        self.atp_log = ATPLog()

    def _get_train_sampler(self, train_dataset=None) -> Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.args.group_by_modality_length:
            return super()._get_train_sampler(train_dataset)
        world = (
            self.args.world_size * self.args.gradient_accumulation_steps
        )  # one megabatch = one global step
        return ModalityLengthGroupedSampler(
            dataset.modality_lengths, self.args.train_batch_size, world, self.args.seed
        )

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """AdamW with parameter groups: {decay, no decay} x {language model, projector}, the projector at
        ``mm_projector_lr``; ATP's modules apart at ``atp_lr``, without weight decay."""
        if self.optimizer is not None or (self.args.mm_projector_lr is None and self.args.atp_lr is None):
            return super().create_optimizer(model)
        model = model if model is not None else self.model
        decay = set(self.get_decay_parameter_names(model))
        groups: dict[tuple[bool, str], list[torch.nn.Parameter]] = {}
        for name, param in model.named_parameters():
            if param.requires_grad:
                part = "atp" if "atp_modules" in name else "projector" if "mm_projector" in name else "llm"
                groups.setdefault((name in decay and part != "atp", part), []).append(param)
        rates = {"projector": self.args.mm_projector_lr, "atp": self.args.atp_lr}
        param_groups = [
            {
                "params": params,
                "weight_decay": self.args.weight_decay if has_decay else 0.0,
                **({"lr": rates[part]} if rates.get(part) is not None else {}),
            }
            for (has_decay, part), params in groups.items()
        ]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    def create_accelerator_and_postprocess(self) -> None:
        """The Trainer's accelerator, with float16 autocast and loss scaling also on CPU.

        accelerate accepts ``--fp16`` on CPU but then runs neither autocast nor a ``GradScaler``: the run
        would silently be float32. torch has both on CPU, so they are switched on here through
        accelerate's own fields (what it sets itself on CUDA); DeepSpeed keeps its own handling.
        """
        super().create_accelerator_and_postprocess()
        accelerator = self.accelerator
        if self.args.fp16 and not self.is_deepspeed_enabled and accelerator.device.type == "cpu":
            if not accelerator.native_amp:
                accelerator.native_amp = True
                accelerator.scaler = torch.amp.GradScaler("cpu")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        if model.training and not torch.isfinite(loss.detach()).all():
            raise FloatingPointError(
                f"Non-finite training loss ({loss.detach().float().mean().item()}) at step "
                f"{self.state.global_step + 1}: stopping before the weights are updated with it "
                "(no checkpoint is written). Check the data and the learning rate."
            )
        truncated = getattr(outputs, "truncated", None)
        if truncated is not None:
            self.num_truncated += int(truncated.sum())
        if getattr(outputs, "atp_budget_loss", None) is not None:
            loss = self._add_atp_loss(loss, outputs, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def _add_atp_loss(self, loss: torch.Tensor, outputs, num_items_in_batch) -> torch.Tensor:
        """``loss + λ_atp L_ATP + λ_target L_target``, scaled as the Trainer scales the language-model loss.

        The ATP terms are per-batch means. When the language-model loss is already normalised over the
        accumulated batch (``num_items_in_batch``), the Trainer no longer divides by the accumulation
        steps, so the ATP terms are divided here; they are added after the Trainer's scaling by the number
        of processes, so that the gradient average over processes leaves them a mean.
        """
        atp = (
            self.args.atp_budget_weight * outputs.atp_budget_loss
            + self.args.atp_target_weight * outputs.atp_target_loss
        )
        scaled_for_ga = self.loss_is_scaled_for_ga
        if scaled_for_ga is None:
            scaled_for_ga = (
                self.model_accepts_loss_kwargs and num_items_in_batch is not None
            ) or self.compute_loss_func is not None
        steps = self.current_gradient_accumulation_steps if scaled_for_ga else 1
        if self.model.training:  # the LM loss as the Trainer logs its loss: per optimizer step
            self.atp_log.add(loss * steps, atp, outputs.atp_kept_tokens, outputs.atp_mean_tokens)
        return loss + atp.to(loss.dtype) / steps

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """The Trainer's logs; training logs also get ATP's means since the last log (LM loss, ATP loss,
        kept tokens after each module, N̄), averaged over the processes."""
        if "loss" in logs and self.atp_log.count:
            layers = getattr(self.llava_config, "mm_atp_layers", None)
            logs = {**logs, **self.atp_log.pop(self.accelerator, layers)}
        super().log(logs, *args, **kwargs)

    def _save_checkpoint(self, model, trial) -> None:
        folder = os.path.join(
            self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        )
        if self.llava_config is not None and self.llava_config.tune_mm_mlp_adapter:
            save_projector(self.model, folder, self.llava_config, self.args.should_save)
            if self.args.should_save:
                self.state.save_to_json(os.path.join(folder, "trainer_state.json"))
            return
        if self.args.lora_enable:  # before the trainer state, which marks the checkpoint complete
            save_lora_extras(self.model, folder, self.llava_config, self.args.should_save)
        super()._save_checkpoint(model, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        extras = os.path.join(resume_from_checkpoint, "non_lora_trainables.bin")
        if self.args.lora_enable and not self.is_deepspeed_enabled:
            state = torch.load(extras, map_location="cpu", weights_only=True)
            missing, unexpected = (model or self.model).load_state_dict(state, strict=False)
            if unexpected:
                raise ValueError(f"{extras} holds weights this model does not have: {unexpected[:4]}")


class ATPLog:
    """Sums of ATP's training figures between two logs (one entry per micro-batch).

    The LM loss is entered as the Trainer counts its own (normalised over the accumulated batch and the
    processes when transformers does so), times the accumulation steps, so that its mean over the
    micro-batches of a step is that step's LM loss; the others are per-batch means.
    """

    def __init__(self) -> None:
        self.count = 0
        self.sums: torch.Tensor | None = None

    def add(self, lm_loss, atp_loss, kept: torch.Tensor, mean_tokens: torch.Tensor) -> None:
        values = torch.cat([torch.stack([lm_loss.detach().float(), atp_loss.detach().float()]), kept.float()])
        values = torch.cat([values, mean_tokens.detach().float().reshape(1)])
        self.sums = values if self.sums is None else self.sums + values
        self.count += 1

    def pop(self, accelerator, layers: list[int] | None = None) -> dict[str, float]:
        """The means since the last call, over this process's micro-batches and then over processes.

        ``atp_kept_layer<l>``: the soft count of visual tokens from insertion layer ``l`` on.
        """
        means = accelerator.reduce(self.sums / self.count, reduction="mean")
        self.count, self.sums = 0, None
        values = [round(float(v), 4) for v in means]
        logs = {"lm_loss": values[0], "atp_loss": values[1], "atp_mean_tokens": values[-1]}
        kept = values[2:-1]
        names = (
            [f"layer{layer}" for layer in layers] if layers and len(layers) == len(kept) else range(len(kept))
        )
        logs.update({f"atp_kept_{name}": v for name, v in zip(names, kept)})
        return logs


def _projector_only(name: str) -> bool:
    return "mm_projector" in name


def written_dtype(state: dict[str, torch.Tensor], model) -> torch.dtype:
    """The floating dtype of ``state`` (of the trainable weights when ``state`` is empty).

    Every trainable weight has one dtype (float32, or DeepSpeed's 16-bit type); should that ever not
    hold, the dtype of most elements is recorded, with a warning rather than a failure at save time.
    """
    tensors = [t for t in (list(state.values()) or trainable_parameters(model)) if t.is_floating_point()]
    counts: dict[torch.dtype, int] = {}
    for tensor in tensors:
        counts[tensor.dtype] = counts.get(tensor.dtype, 0) + tensor.numel()
    if len(counts) > 1:
        logger.warning("Weights saved in several dtypes %s; config.json records the main one.", counts)
    return max(counts, key=counts.get, default=torch.float32)


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _require_finite(state: dict[str, torch.Tensor], folder: str) -> None:
    bad = [name for name, value in state.items() if value.is_floating_point() and not value.isfinite().all()]
    if bad:
        raise FloatingPointError(f"Not writing {folder}: non-finite values in {bad[:4]}.")


def save_projector(model, folder: str, config, should_save: bool) -> None:
    """Writes ``mm_projector.bin`` (keys ``model.mm_projector.*``) and ``config.json`` (gathers under ZeRO-3)."""
    state = gathered_state(model, _projector_only)
    if should_save:
        _require_finite(state, folder)
        os.makedirs(folder, exist_ok=True)
        state = {
            "model.mm_projector." + key.split("mm_projector.", 1)[1]: value for key, value in state.items()
        }
        torch.save(state, os.path.join(folder, "mm_projector.bin"))
        config.dtype = written_dtype(state, model)
        config.save_pretrained(folder)


def save_lora_extras(model, folder: str, config, should_save: bool) -> None:
    """Writes ``non_lora_trainables.bin`` (trainable non-LoRA weights, PEFT key names) and ``config.json``.

    The adapter written beside it by the Trainer has the same dtype (every trainable weight has one).
    """
    state = gathered_state(model, lambda name: "lora_" not in name, trainable_only=True)
    if should_save:
        _require_finite(state, folder)
        os.makedirs(folder, exist_ok=True)
        torch.save(state, os.path.join(folder, "non_lora_trainables.bin"))
        config.dtype = written_dtype(state, model)
        config.save_pretrained(folder)


def checkpoint_problem(folder: str | os.PathLike, lora: bool) -> str | None:
    """Why ``folder`` cannot be resumed from, or None when it is complete.

    The trainer state is written last, so a checkpoint without it was cut off while being written; a
    LoRA checkpoint also needs ``non_lora_trainables.bin`` (the projector), or resuming would silently
    restart the projector from its initial weights.
    """
    folder = Path(folder)
    if not (folder / "trainer_state.json").is_file():
        return "no trainer_state.json (the run stopped while writing it)"
    if lora and not (folder / "non_lora_trainables.bin").is_file():
        return "no non_lora_trainables.bin (the projector)"
    return None


def require_complete(folder: str | os.PathLike, lora: bool) -> None:
    problem = checkpoint_problem(folder, lora)
    if problem:
        raise FileNotFoundError(
            f"Cannot resume from {folder}: {problem}. Resume from an earlier checkpoint-N, or pass "
            "--resume_from_checkpoint True to take the latest complete one."
        )


def latest_complete_checkpoint(output_dir: str | os.PathLike, lora: bool) -> str:
    """The newest ``checkpoint-N`` of ``output_dir`` that can be resumed from; incomplete ones are skipped."""
    folders = sorted(
        (
            p
            for p in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
            if p.is_dir() and p.name.split("-")[-1].isdigit()
        ),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for folder in folders:
        problem = checkpoint_problem(folder, lora)
        if problem is None:
            return str(folder)
        logger.warning("Skipping %s: %s.", folder, problem)
    raise FileNotFoundError(
        f"--resume_from_checkpoint True: no complete checkpoint-N in {output_dir}"
        + (f" ({len(folders)} incomplete)." if folders else ".")
    )
