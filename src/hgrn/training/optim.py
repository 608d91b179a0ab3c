"""Optimiser parameter groups and learning-rate schedules (step-based, as the papers' recipes, or per epoch)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR

PAST_TOTAL = ("rise", "hold")


def param_groups(model: nn.Module) -> list[dict]:
    """Two groups: weight matrices and embeddings decay; vectors (norms, biases, HGRN1's theta), the lower-bound
    logits and what the model lists in timm's `no_weight_decay()` (a ViT's position embedding and class token) do
    not."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim < 2 or "lower_bounds" in name.split(".") or name in skip
        (no_decay if exempt else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def fused_by_default(factory: Callable[..., Optimizer], device: torch.device, clips_gradients: bool) -> bool:
    """Whether a task builds `factory`'s optimiser fused: on a GPU, where the optimiser has a fused implementation and
    the config does not choose, and where the run does not clip gradients (Lightning's mixed precision refuses to
    clip for an optimiser that unscales gradients itself, as fused ones declare, even under bf16)."""
    chosen = "fused" in getattr(factory, "keywords", {})
    has_fused = "fused" in inspect.signature(factory).parameters
    return device.type == "cuda" and has_fused and not chosen and not clips_gradients


def adamw(
    groups: list[dict],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decay_every_parameter: bool = False,
    fused: bool | None = None,
) -> AdamW:
    """torch AdamW over the task's parameter groups (param_groups: norms, biases and lower bounds exempt from weight
    decay), or with decay_every_parameter over one group that decays them all, as the official LRA and Zoology
    optimisers do (`AdamW(model.parameters(), lr, weight_decay=wd)`); fused: torch's fused implementation."""
    if decay_every_parameter:
        groups = [{"params": [param for group in groups for param in group["params"]]}]
    return AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, fused=fused)


def cosine_warmup(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
    past_total: str = "rise",
) -> LambdaLR:
    """transformers' get_cosine_schedule_with_warmup, the official LRA schedule, stepped every optimiser step:
    the factor rises linearly from 0 (step / warmup_steps), then follows min + (1 - min) (1 + cos(pi p)) / 2 with
    p = (step - warmup_steps) / (total_steps - warmup_steps).

    past_total: what p > 1 does, for runs longer than total_steps. 'rise': p is not clamped, as in transformers,
    so the factor climbs back to 1 at p = 2 (HGRN1's LRA Image runs 90k steps on a 50k schedule); 'hold': it stays
    at min_lr_ratio.
    """
    if past_total not in PAST_TOTAL:
        raise ValueError(f"past_total={past_total!r} is not known; choose one of {PAST_TOTAL}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if past_total == "hold":
            progress = min(1.0, progress)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def cosine_per_epoch(optimizer: Optimizer, epochs: int) -> dict[str, Any]:
    """PyTorch's CosineAnnealingLR(T_max=epochs, eta_min=0) stepped once per epoch, no warm-up: Zoology's MQAR
    schedule (lr (1 + cos(pi e / epochs)) / 2 through epoch e). A Lightning scheduler dict, for its interval."""
    return {"scheduler": CosineAnnealingLR(optimizer, T_max=epochs, eta_min=0.0), "interval": "epoch"}


def timm_cosine(
    optimizer: Optimizer, epochs: int, warmup_epochs: int = 5, warmup_lr: float = 1e-6, min_lr: float = 1e-5
) -> dict[str, Any]:
    """DeiT's schedule, timm's CosineLRScheduler stepped once per epoch (the task steps it with the epoch number):
    linear warm-up from warmup_lr to lr over warmup_epochs, then lr_min + (lr - lr_min)(1 + cos(pi e / epochs)) / 2
    at epoch e (the cosine counts from epoch 0, not from the end of the warm-up, as timm's default). A Lightning
    scheduler dict, for its interval."""
    scheduler = CosineLRScheduler(
        optimizer, t_initial=epochs, lr_min=min_lr, warmup_t=warmup_epochs, warmup_lr_init=warmup_lr, t_in_epochs=True
    )
    return {"scheduler": scheduler, "interval": "epoch"}


def inverse_sqrt(
    optimizer: Optimizer, total_steps: int, warmup_steps: int = 4000, warmup_init_ratio: float = 0.0
) -> LambdaLR:
    """fairseq's inverse_sqrt: linear warm-up from warmup_init_ratio * lr, then lr * sqrt(warmup / step)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return warmup_init_ratio + (1 - warmup_init_ratio) * (step + 1) / warmup_steps
        return math.sqrt(warmup_steps / (step + 1))

    return LambdaLR(optimizer, factor)


def constant_warmup(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0)
