"""Linear + cross-entropy over chunks of rows: the loss of an LM head that never holds the logits of every position.

`F.cross_entropy(lm_head(h).float(), labels)` materialises the logits of all N positions over the whole vocabulary,
their fp32 copy and, for backward, their softmax: at N = 16k tokens and V = 32k that is 2 GiB per fp32 copy.
Here the rows go `chunk_rows` at a time. For each chunk the logits are formed, reduced to the loss and at once turned
into d loss / d logits, which is folded into the gradients of the hidden states and of the weight before the next
chunk. Backward only scales those two saved gradients by the incoming one, so no logits outlive their chunk.

The numbers follow the unfused form: the matmuls run in the compute dtype (the autocast dtype when autocast is on,
else the inputs' dtype), the logits are rounded to it as `lm_head(h)` rounds them, the softmax and the loss are fp32
(fp64 for fp64 inputs), and d loss / d logits is rounded back to the compute dtype before the two matmuls of the
backward, as autograd does through `.float()`. The weight's gradient is summed over chunks in fp32.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
from torch import Tensor

from hgrn.ops.dispatch import KERNEL_DTYPES, USE_KERNELS

REDUCTIONS = ("mean", "sum")
LOSS_KERNEL = os.environ.get("HGRN_LOSS_KERNEL", "1") != "0" and USE_KERNELS  # compiled: the Triton kernel (GPU)
CHUNK_ELEMENTS = 2**26  # logits per chunk: 256 MiB in fp32; 8 chunks for 16k positions x a 32k vocabulary


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    chunk_rows: int | None = None,
    compiled: bool = False,
) -> Tensor:
    """Cross-entropy of the logits `hidden @ weight.T` against `labels`, computed chunk by chunk.

    hidden: [..., d] (e.g. [B, T, d]); weight: [V, d] (the tied embedding); labels: hidden's leading shape, int,
    `ignore_index` where nothing is predicted. reduction 'mean' averages over the labelled positions (NaN when there
    are none, as F.cross_entropy); 'sum' adds them. chunk_rows: rows per chunk (default: about 2^26 logits per
    chunk). compiled: run each chunk's softmax and gradient fused (`_chunk_function`: torch.compile, or our kernel).
    Returns a scalar, fp32 (fp64 for fp64 inputs).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not known; choose one of {REDUCTIONS}")
    if weight.ndim != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"weight {tuple(weight.shape)} must be [vocab, d], d = hidden's last size {hidden.shape[-1]}")
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(f"labels {tuple(labels.shape)} must have hidden's leading shape {tuple(hidden.shape[:-1])}")
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"chunk_rows={chunk_rows} must be positive (or None for the default)")
    flat_hidden, flat_labels = hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1)
    rows = chunk_rows or equal_chunk_rows(flat_hidden.shape[0], max(1, CHUNK_ELEMENTS // weight.shape[0]))
    options = (ignore_index, reduction, rows, compiled)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return LinearCrossEntropy.apply(flat_hidden, weight, flat_labels, options)
    return chunked_loss_and_grads(flat_hidden, weight, flat_labels, *options, need_grads=False)[0]


class LinearCrossEntropy(torch.autograd.Function):
    """The gradients are made in forward (`chunked_loss_and_grads`); backward scales them by d out / d loss."""

    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, labels: Tensor, options: tuple) -> Tensor:
        loss, grad_hidden, grad_weight = chunked_loss_and_grads(hidden, weight, labels, *options, need_grads=True)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.dtypes = hidden.dtype, weight.dtype
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor, Tensor, None, None]:
        grad_hidden, grad_weight = ctx.saved_tensors
        hidden_dtype, weight_dtype = ctx.dtypes
        scale = grad_loss.to(grad_weight.dtype)
        return grad_hidden.to(hidden_dtype) * scale.to(hidden_dtype), (grad_weight * scale).to(weight_dtype), None, None


def equal_chunk_rows(n: int, most: int) -> int:
    """Rows per chunk for n rows in chunks of at most `most` rows, all chunks equal where a divisor of n allows it
    (up to twice the fewest chunks), else all but the last. Compiled, the chunk's softmax then has one shape to
    compile, not a second for a shorter last chunk (measured: the second compilation cost about 2 s of the LM anchor's
    first step, 16384 rows in chunks of 2097 -> 8 x 2048; a WikiText-103 batch, 65536 rows at vocabulary 50257, goes
    in 64 x 1024, not 50 x 1311 and a last 1297)."""
    if n == 0:
        return most
    fewest = -(-n // most)
    chunks = next((c for c in range(fewest, 2 * fewest + 1) if n % c == 0), fewest)
    return -(-n // chunks)


def chunked_loss_and_grads(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    ignore_index: int,
    reduction: str,
    chunk_rows: int,
    compiled: bool,
    *,
    need_grads: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """hidden [N, d], weight [V, d], labels [N] -> (loss, d loss/d hidden [N, d] in the compute dtype (as the
    unfused head makes it, before its cast to hidden's dtype), d loss/d weight [V, d] fp32 (fp64 for fp64 inputs)),
    the gradients None unless need_grads. Every step stays on the device (no host sync)."""
    compute_dtype = _compute_dtype(hidden, weight)
    loss_dtype = torch.float64 if compute_dtype == torch.float64 else torch.float32
    labelled = (labels != ignore_index).sum(dtype=loss_dtype)
    divisor = labelled if reduction == "mean" else torch.ones((), dtype=loss_dtype, device=hidden.device)
    grad_scale = 1 / divisor.clamp_min(1)  # no labelled rows: zero gradients (as F.cross_entropy), a NaN mean
    chunk = _chunk_function(hidden.device, compute_dtype) if compiled else logits_loss_and_grad
    with torch.autocast(hidden.device.type, enabled=False):
        w = weight.to(compute_dtype)
        total = torch.zeros((), dtype=loss_dtype, device=hidden.device)
        grad_hidden = torch.empty_like(hidden, dtype=compute_dtype) if need_grads else None
        grad_weight = torch.zeros(weight.shape, dtype=loss_dtype, device=weight.device) if need_grads else None
        for start in range(0, hidden.shape[0], chunk_rows):
            h = hidden[start : start + chunk_rows].to(compute_dtype)
            loss, grad_logits = chunk(h @ w.T, labels[start : start + chunk_rows], ignore_index, grad_scale, need_grads)
            total += loss
            if need_grads:
                grad_hidden[start : start + chunk_rows] = grad_logits @ w
                grad_weight += grad_logits.T @ h
    return total / divisor, grad_hidden, grad_weight


def logits_loss_and_grad(
    logits: Tensor, labels: Tensor, ignore_index: int, scale: Tensor, need_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """logits [C, V] (a fresh tensor: overwritten), labels [C] -> (summed loss of the labelled rows, and when
    need_grad d(scale * loss)/d logits [C, V] in logits' dtype; zero on ignored rows)."""
    wide = logits.float() if logits.dtype != torch.float64 else logits
    labelled = labels != ignore_index
    target = torch.where(labelled, labels, 0)[:, None]
    log_norm = torch.logsumexp(wide, -1, keepdim=True)
    loss = ((log_norm - wide.gather(1, target))[:, 0] * labelled).sum()
    if not need_grad:
        return loss, None
    probs = wide.sub_(log_norm).exp_()  # in place: `wide` is a copy of the logits, or the fresh logits themselves
    probs.scatter_add_(1, target, -labelled[:, None].to(probs.dtype))
    return loss, probs.mul_(labelled[:, None] * scale).to(logits.dtype)


def fused_chunk_is_kernel(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the fused chunk (`_chunk_function`) of `dtype` logits on `device` is our Triton kernel: on a GPU, in
    the kernels' dtypes, unless HGRN_LOSS_KERNEL=0."""
    return LOSS_KERNEL and device.type == "cuda" and dtype in KERNEL_DTYPES


def compile_fused_ahead(vocab: int) -> None:
    """Where the fused chunk is our kernel, start its compilation on the compile threads for rows of `vocab` bf16
    logits (the GPU recipes' precision), so that the first loss finds it compiled."""
    if not torch.cuda.is_available():
        return
    device = torch.device("cuda", torch.cuda.current_device())
    if fused_chunk_is_kernel(device, torch.bfloat16):
        from hgrn.ops.triton.cross_entropy import compile_in_background

        compile_in_background(vocab, torch.bfloat16, device)


def _chunk_function(device: torch.device, dtype: torch.dtype) -> Any:
    """The fused form of `logits_loss_and_grad`: our Triton kernel (hgrn.ops.triton.cross_entropy) on a GPU
    unless HGRN_LOSS_KERNEL=0, else the PyTorch form through torch.compile. The kernel compiles ahead on the compile
    threads, so the first step has no Dynamo frame and no Inductor kernels for the loss: at the LM anchor (H200, one
    machine, two runs each) first step 12.3 and 12.1 s against 13.7 and 13.2 s, 178.8k and 178.0k tokens/s against
    176.5k and 176.3k, peak 23.2 against 23.5 GiB."""
    if fused_chunk_is_kernel(device, dtype):
        from hgrn.ops.triton.cross_entropy import logits_loss_and_grad as kernel

        return kernel
    return _compiled_chunk()


@functools.cache
def _compiled_chunk() -> Any:
    """Static shapes first (the training step's one chunk shape compiles once, specialised); a second shape (a short
    last batch in evaluation) turns the rows dynamic, so evaluation's shapes, no-grad and inference-mode calls stay
    within Dynamo's recompile limit (measured: with `dynamic=False` a 40-step Penn Treebank run hit it in testing)."""
    return torch.compile(logits_loss_and_grad)


def _compute_dtype(hidden: Tensor, weight: Tensor) -> torch.dtype:
    """The dtype of `hidden @ weight.T` as the unfused head computes it: autocast's, else the promoted dtype."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device) and hidden.dtype != torch.float64:
        return torch.get_autocast_dtype(device)
    return torch.promote_types(hidden.dtype, weight.dtype)
