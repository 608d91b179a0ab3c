"""Cross-entropy of a chunk of logit rows and its gradient, one Triton program per row, written over the logits.

The chunked LM loss (hgrn.layers.linear_cross_entropy) forms the logits of a chunk of rows, turns them into the
rows' losses and d loss / d logits, and folds those into the gradients of the hidden states and the weight. This
kernel is that middle step: two passes over each row, an online max and sum of exponentials (per lane, combined at
the end), then the softmax minus the label's one-hot, scaled, stored over the logits. As a kernel of our own it
compiles on precompile's threads while torch.compile works on the blocks, instead of as an Inductor graph of its own
on the main thread (two reduction kernels, 0.5-1.5 s each, in the LM anchor's first step).

Numbers as `logits_loss_and_grad` (the PyTorch form): fp32 arithmetic for fp16/bf16/fp32 logits, the gradient
rounded to the logits' dtype; the row sums run in another order, so results agree to fp32 rounding.
"""

from __future__ import annotations

import torch
import triton.language as tl
from torch import Tensor

from hgrn.ops.triton import precompile
from hgrn.ops.triton._common import LOG2E
from hgrn.ops.triton.precompile import entry

BLOCK = 4096  # columns per step of a row's loop: 16 fp32 values per thread at 8 warps
WARPS = 8


# V specialised: a vocabulary divisible by 16 makes the masked row loads and stores 16-byte vectors (sm_90 SASS of the
# bf16 kernel: 4 LDG.128 per step, against 33 2-byte loads with V unspecialised)
@entry(do_not_specialize=["ignore_index"])
def _cross_entropy_rows_kernel(
    logits, labels, scale, loss, V, stride, ignore_index, BLOCK: tl.constexpr, NEED_GRAD: tl.constexpr
):
    """Row r of logits [C, V] (row stride `stride`): loss[r] = logsumexp - the label's logit (0 where the label is
    ignore_index); with NEED_GRAD the row becomes scale * (softmax - one-hot) (zero where ignored)."""
    r = tl.program_id(0)
    row = logits + r.to(tl.int64) * stride
    cols = tl.arange(0, BLOCK)
    label = tl.load(labels + r)
    labelled = label != ignore_index
    # base-2 logs throughout: x log2(e), so that each exponential is one exp2 (tl.exp adds range fix-ups)
    m = tl.full([BLOCK], -3.0e38, tl.float32)  # finite, so that exp2(m - m_new) stays defined on masked lanes
    s = tl.zeros([BLOCK], tl.float32)
    for start in range(0, V, BLOCK):
        x = tl.load(row + start + cols, mask=start + cols < V, other=float("-inf")).to(tl.float32) * LOG2E
        m_new = tl.maximum(m, x)
        s = s * tl.exp2(m - m_new) + tl.exp2(x - m_new)
        m = m_new
    top = tl.max(m, 0)
    lse2 = top + tl.log2(tl.sum(s * tl.exp2(m - top), 0))  # log2 of the sum of e^x
    target = tl.where(labelled, label, 0)
    picked = tl.load(row + target).to(tl.float32)
    tl.store(loss + r, tl.where(labelled, lse2 / LOG2E - picked, 0.0))
    if NEED_GRAD:
        g = tl.where(labelled, tl.load(scale), 0.0)
        for start in range(0, V, BLOCK):
            c = start + cols
            x = tl.load(row + c, mask=c < V, other=0.0).to(tl.float32)
            p = tl.exp2(x * LOG2E - lse2) - tl.where(c == target, 1.0, 0.0)
            tl.store(row + c, (p * g).to(row.dtype.element_ty), mask=c < V)


def logits_loss_and_grad(
    logits: Tensor, labels: Tensor, ignore_index: int, scale: Tensor, need_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """The signature of hgrn.layers.linear_cross_entropy.logits_loss_and_grad: logits [C, V] (fp16/bf16/fp32, rows
    contiguous; overwritten by the gradient), labels [C] int, scale a 0-d fp32 tensor -> (the labelled rows' summed
    loss, fp32; d(scale * loss)/d logits [C, V] in logits' dtype, the logits' own storage, or None)."""
    if logits.stride(1) != 1:
        raise ValueError(f"logits {tuple(logits.shape)} need contiguous rows (stride {logits.stride()})")
    rows, labels = logits.shape[0], labels.contiguous()
    losses = logits.new_empty(rows, dtype=torch.float32)
    if rows:
        vocab, stride = logits.shape[1], logits.stride(0)
        _cross_entropy_rows_kernel[(rows,)](logits, labels, scale.float(), losses, vocab, stride, ignore_index,
                                            BLOCK=BLOCK, NEED_GRAD=need_grad, num_warps=WARPS)  # fmt: skip
    return losses.sum(), (logits if need_grad else None)


def compile_in_background(vocab: int, dtype: torch.dtype, device: torch.device) -> None:
    """Start compiling the training variant for rows of `vocab` logits of `dtype` on `device` (a GPU) on precompile's
    compile threads: a model set to compile calls this, and its first loss, seconds later, finds the kernel compiled.
    Nothing to allocate where precompile is off."""
    if not precompile.ENABLED:
        return
    logits = torch.empty(1, vocab, dtype=dtype, device=device)
    labels = torch.zeros(1, dtype=torch.long, device=device)
    precompile.in_background(logits_loss_and_grad, (logits, labels, -100, torch.ones((), device=device), True))
