"""Optimiser parameter groups and learning-rate schedules (step-based, as every recipe in the papers)."""

from __future__ import annotations

import math

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def param_groups(model: nn.Module) -> list[dict]:
    """Two groups: weight matrices and embeddings decay; vectors (norms, biases, HGRN1's theta) and the lower-bound
    logits do not."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim < 2 or "lower_bounds" in name.split(".")
        (no_decay if exempt else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def cosine_warmup(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0) -> LambdaLR:
    """Linear warm-up from 0, then cosine decay to min_lr_ratio * lr at total_steps (the LRA recipes)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


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
