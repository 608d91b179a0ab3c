"""The loss kernel (hgrn.ops.triton.cross_entropy) against the float64 PyTorch form of a chunk's loss and gradient.

On CPU through the Triton interpreter (fp32 and fp16 logits); with a GPU (-m gpu) in bf16 at the LM anchor's chunk,
and the whole linear + cross-entropy through it against F.cross_entropy.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hgrn.layers import linear_cross_entropy as lce
from hgrn.ops.triton import cross_entropy
from tests.helpers import assert_close

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # interpreter: exp(-inf) in masked lanes
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter tests; the GPU runs the gpu ones")


def rows(n: int, vocab: int, *, dtype: torch.dtype, device: str = "cpu", spread: float = 3.0, seed: int = 0):
    """Logits [n, vocab] with a few huge ones, labels [n] with every third row ignored (-100), a scale."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vocab, generator=g, dtype=torch.float64) * spread
    if n > 1:
        logits[1, 5] = 80.0  # a dominant logit in a labelled row: the online max rescales the sums before it
        logits[-1, -1] = -80.0
    labels = torch.randint(0, vocab, (n,), generator=g)
    labels[::3] = -100
    scale = torch.tensor(1 / 7, dtype=torch.float32)
    return logits.to(dtype).to(device), labels.to(device), scale.to(device)


def expected(logits: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The PyTorch form in float64 on the same (rounded) logits."""
    return lce.logits_loss_and_grad(logits.double(), labels, -100, scale.double(), True)


@cpu_only
@pytest.mark.parametrize(("n", "vocab"), [(7, 10), (5, cross_entropy.BLOCK + 3), (4, 2 * cross_entropy.BLOCK)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_interpreted_loss_and_gradient_equal_the_float64_form(n, vocab, dtype):
    """A vocabulary shorter than one block, one just past a block (a masked tail), exactly two blocks."""
    logits, labels, scale = rows(n, vocab, dtype=dtype, seed=n)
    loss_ref, grad_ref = expected(logits, labels, scale)
    work = logits.clone()
    loss, grad = cross_entropy.logits_loss_and_grad(work, labels, -100, scale, True)
    assert loss.dtype == torch.float32 and grad.dtype == dtype and grad.data_ptr() == work.data_ptr()
    assert_close("loss", loss, loss_ref, 1e-6)
    assert_close("grad", grad, grad_ref, 1e-6 if dtype == torch.float32 else 1e-3)
    assert not grad[::3].any()  # ignored rows: zero gradient


@cpu_only
def test_interpreted_without_gradient_leaves_the_logits_and_matches_the_pytorch_form():
    logits, labels, scale = rows(6, 300, dtype=torch.float32, seed=3)
    work = logits.clone()
    loss, grad = cross_entropy.logits_loss_and_grad(work, labels, -100, scale, False)
    assert grad is None and torch.equal(work, logits)
    assert_close("loss", loss, lce.logits_loss_and_grad(logits.double(), labels, -100, scale, False)[0], 1e-6)


@cpu_only
def test_interpreted_strided_labels_are_read_in_order_and_strided_rows_refused():
    logits, labels, scale = rows(5, 40, dtype=torch.float32, seed=5)
    strided = torch.stack([labels, torch.zeros_like(labels)], 1)[:, 0]  # stride 2
    loss, _ = cross_entropy.logits_loss_and_grad(logits.clone(), strided, -100, scale, True)
    assert_close("loss", loss, expected(logits, labels, scale)[0], 1e-6)
    with pytest.raises(ValueError, match=r"need contiguous rows"):
        cross_entropy.logits_loss_and_grad(logits.t(), labels[:4], -100, scale, True)


@cpu_only
def test_interpreted_no_rows_and_all_rows_ignored():
    logits, labels, scale = rows(0, 50, dtype=torch.float32)
    loss, grad = cross_entropy.logits_loss_and_grad(logits, labels, -100, scale, True)
    assert loss.item() == 0.0 and grad.shape == (0, 50)
    logits, labels, scale = rows(3, 50, dtype=torch.float32)
    loss, grad = cross_entropy.logits_loss_and_grad(logits, torch.full_like(labels, -100), -100, scale, True)
    assert loss.item() == 0.0 and not grad.any()


@pytest.mark.gpu
def test_gpu_bf16_chunk_of_the_anchor():
    """2048 rows of a 32000 vocabulary in bf16, as each chunk of the LM anchor's loss."""
    logits, labels, scale = rows(2048, 32000, dtype=torch.bfloat16, device="cuda")
    loss_ref, grad_ref = expected(logits, labels, scale)
    loss, grad = cross_entropy.logits_loss_and_grad(logits.clone(), labels, -100, scale.cuda(), True)
    assert_close("loss", loss, loss_ref, 1e-5)
    assert_close("grad", grad, grad_ref, 1e-2)


@pytest.mark.gpu
def test_gpu_linear_cross_entropy_through_the_kernel_equals_f_cross_entropy(monkeypatch):
    monkeypatch.setattr(lce, "LOSS_KERNEL", True)
    g = torch.Generator(device="cuda").manual_seed(0)
    hidden = torch.randn(4, 1000, 256, device="cuda", generator=g, requires_grad=True)
    weight = (torch.randn(32000, 256, device="cuda", generator=g) * 0.05).requires_grad_()
    labels = torch.randint(0, 32000, (4, 1000), device="cuda", generator=g)
    labels[:, ::5] = -100
    with torch.autocast("cuda", dtype=torch.bfloat16):
        fused = lce.linear_cross_entropy(hidden, weight, labels, compiled=True)
        unfused = F.cross_entropy((hidden @ weight.T).float().flatten(0, 1), labels.flatten())
    grads = torch.autograd.grad(fused, (hidden, weight))
    grads_ref = torch.autograd.grad(unfused, (hidden, weight))
    assert_close("loss", fused, unfused, 1e-4)
    for name, a, e in zip(("d hidden", "d weight"), grads, grads_ref, strict=True):
        assert_close(name, a, e, 2e-2)
