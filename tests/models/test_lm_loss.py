"""The chunked linear + cross-entropy equals F.cross_entropy on the full logits (values, and gradients w.r.t. the
hidden states and the tied weight) in float64, fp32 and under bf16 autocast; the LM task reports loss and
perplexity as token-weighted means over the labelled positions."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F

from hgrn.layers import linear_cross_entropy as lce
from hgrn.layers.linear_cross_entropy import equal_chunk_rows, linear_cross_entropy
from hgrn.models import BackboneConfig, CausalLM, CausalLMConfig
from hgrn.training import LanguageModelingTask
from tests.helpers import assert_close, rel_err

IGNORE = -100


def unfused(hidden, weight, labels, reduction="mean"):
    """The head as written without fusion: full logits (rounded to the autocast dtype), fp32 cross-entropy."""
    logits = F.linear(hidden, weight)
    logits = logits if logits.dtype == torch.float64 else logits.float()
    return F.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=IGNORE, reduction=reduction)


def inputs(rows=(2, 13), d=11, vocab=37, dtype=torch.float64, ignored=7, seed=0, device="cpu"):
    """hidden [*rows, d], weight [vocab, d], labels [*rows] with the first `ignored` positions unlabelled."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(*rows, d, generator=g, dtype=dtype).to(device).requires_grad_()
    weight = torch.randn(vocab, d, generator=g, dtype=dtype).to(device).requires_grad_()
    labels = torch.randint(0, vocab, rows, generator=g)
    labels.view(-1)[:ignored] = IGNORE
    return hidden, weight, labels.to(device)


def value_and_grads(loss_fn, hidden, weight, labels, **kwargs):
    loss = loss_fn(hidden, weight, labels, **kwargs)
    return (loss, *torch.autograd.grad(loss, (hidden, weight)))


@pytest.mark.parametrize("chunk_rows", [1, 3, 7, 10, 64])  # 26 rows: uneven last chunks, all-ignored chunks
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_float64_equals_cross_entropy_on_full_logits(chunk_rows, reduction):
    hidden, weight, labels = inputs()
    expected = value_and_grads(unfused, hidden, weight, labels, reduction=reduction)
    actual = value_and_grads(linear_cross_entropy, hidden, weight, labels, reduction=reduction, chunk_rows=chunk_rows)
    for name, a, e in zip(("loss", "d hidden", "d weight"), actual, expected, strict=True):
        assert a.dtype == e.dtype
        assert_close(name, a, e, 1e-12)


@pytest.mark.parametrize(
    ("n", "most"),
    [
        (0, 2097),
        (1, 2097),
        (5, 2097),
        (2098, 2097),
        (16383, 2097),
        (16384, 2097),
        (100_000, 2097),
        (65536, 1335),
        (10007, 100),
    ],
)
def test_default_chunks_are_equal_where_a_divisor_allows_and_within_the_limit(n, most):
    rows = equal_chunk_rows(n, most)  # 2097: the anchor's limit, 2^26 logits over a 32000 vocabulary
    sizes = [min(rows, n - start) for start in range(0, n, rows)]
    fewest = -(-n // most)
    assert rows <= most and fewest <= len(sizes) <= 2 * fewest
    divisors = [c for c in range(fewest, 2 * fewest + 1) if n and n % c == 0]
    if divisors:
        assert len(set(sizes)) == 1  # one shape to compile (16384 rows: 8 x 2048; 65536 rows: 64 x 1024)
    else:
        assert len(set(sizes[:-1])) <= 1  # 10007 is prime: equal chunks and a shorter last one


def test_fp32_equals_cross_entropy_on_full_logits():
    hidden, weight, labels = inputs(rows=(3, 50), d=24, vocab=301, dtype=torch.float32, ignored=20, seed=1)
    expected = value_and_grads(unfused, hidden, weight, labels)
    actual = value_and_grads(linear_cross_entropy, hidden, weight, labels, chunk_rows=16)
    for name, a, e in zip(("loss", "d hidden", "d weight"), actual, expected, strict=True):
        assert_close(name, a, e, 1e-5)


def test_bf16_autocast_follows_the_rounding_of_the_unfused_head():
    """Logits rounded to bf16, fp32 softmax, bf16 gradients of the logits: errors of bf16 size, and far closer to
    the unfused head under autocast than either is to the fp32 computation."""
    hidden, weight, labels = inputs(rows=(4, 40), d=64, vocab=500, dtype=torch.float32, ignored=5, seed=2)
    exact = value_and_grads(unfused, hidden, weight, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = value_and_grads(unfused, hidden, weight, labels)
        actual = value_and_grads(linear_cross_entropy, hidden, weight, labels, chunk_rows=48)
    assert actual[0].dtype == torch.float32 and actual[1].dtype == hidden.dtype and actual[2].dtype == weight.dtype
    assert_close("loss", actual[0], expected[0], 1e-5)
    for name, a, e, x in zip(("d hidden", "d weight"), actual[1:], expected[1:], exact[1:], strict=True):
        assert_close(name, a, e, 1e-2)
        assert rel_err(a, e) < rel_err(e, x), f"{name}: not following the unfused head's bf16 rounding"


def test_no_labelled_position_gives_nan_mean_and_zero_gradients_as_cross_entropy():
    hidden, weight, labels = inputs(ignored=26)
    loss, d_hidden, d_weight = value_and_grads(linear_cross_entropy, hidden, weight, labels, chunk_rows=5)
    assert torch.isnan(loss) and torch.isnan(unfused(hidden, weight, labels))
    assert not d_hidden.any() and not d_weight.any()
    assert linear_cross_entropy(hidden, weight, labels, reduction="sum").item() == 0


def test_without_gradients_the_value_is_the_same_and_no_graph_is_kept():
    hidden, weight, labels = inputs()
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, labels, chunk_rows=4)
    assert loss.grad_fn is None
    assert_close("loss", loss, unfused(hidden, weight, labels).detach(), 1e-12)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"reduction": "none"}, "reduction='none' is not known"),
        ({"weight": torch.zeros(37, 5)}, "must be [vocab, d]"),
        ({"labels": torch.zeros(26, dtype=torch.long)}, "must have hidden's leading shape"),
        ({"chunk_rows": 0}, "chunk_rows=0 must be positive"),
    ],
)
def test_bad_arguments_get_one_clear_line(change, message):
    hidden, weight, labels = inputs()
    arguments = {"hidden": hidden, "weight": weight, "labels": labels, **change}
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        linear_cross_entropy(**arguments)


def tiny_lm(vocab=29):
    torch.manual_seed(0)
    backbone = BackboneConfig(d_model=16, n_layers=2, mixer="hgrn2", mixer_options={"expand_ratio": 4})
    return CausalLM(CausalLMConfig(backbone, vocab_size=vocab)).double()


def test_causal_lm_loss_equals_the_logits_path_for_every_parameter():
    """model.loss gives the tied weight both its gradients (embedding and output head), as the logits path."""
    model = tiny_lm()
    tokens = torch.randint(0, 29, (3, 9))
    labels = tokens.roll(-1, 1)
    labels[:, -1] = IGNORE
    params = list(model.parameters())
    expected_loss = F.cross_entropy(model(tokens).flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
    expected = torch.autograd.grad(expected_loss, params)
    actual_loss = model.loss(tokens, labels)
    actual = torch.autograd.grad(actual_loss, params)
    assert_close("loss", actual_loss, expected_loss, 1e-12)
    for (name, _), a, e in zip(model.named_parameters(), actual, expected, strict=True):
        assert_close(name, a, e, 1e-10)


@pytest.mark.parametrize("whole", [False, True])
def test_compile_blocks_keeps_parameter_names(whole):
    """Checkpoints stay loadable: compiling in place adds no `_orig_mod` to the names. `whole` compiles each block
    entire, otherwise its norms and GLU only."""
    model = tiny_lm()
    names = [name for name, _ in model.named_parameters()]
    model.compile_blocks(whole)
    assert model.compiled and [name for name, _ in model.named_parameters()] == names
    block = model.backbone.blocks[0]
    assert (block._compiled_call_impl is not None) == whole
    assert (block.glu._compiled_call_impl is not None) != whole


def tiny_task(vocab: int, token_accuracy: bool) -> LanguageModelingTask:
    """A float64 language-modeling task on a 2-layer HGRN2 of width 16."""
    return LanguageModelingTask(
        backbone={"d_model": 16, "n_layers": 2, "mixer": "hgrn2", "mixer_options": {"expand_ratio": 4}},
        data={"vocab_size": vocab},
        optim=functools.partial(torch.optim.AdamW, lr=1e-3),
        token_accuracy=token_accuracy,
    ).double()


@pytest.mark.filterwarnings("ignore:You are trying to")  # no trainer: only the metrics accumulate
@pytest.mark.parametrize("token_accuracy", [False, True])
def test_task_loss_and_ppl_are_token_weighted_over_labelled_positions(token_accuracy):
    """Two validation batches with 17 and 3 labelled tokens: val/loss is the NLL summed over all 20 over 20."""
    vocab = 29
    task = tiny_task(vocab, token_accuracy)
    g = torch.Generator().manual_seed(3)
    batches = []
    for labelled in (17, 3):
        inputs_ = torch.randint(0, vocab, (2, 10), generator=g)
        labels = torch.full((2, 10), IGNORE)
        labels.view(-1)[:labelled] = torch.randint(0, vocab, (labelled,), generator=g)
        batches.append({"inputs": inputs_, "labels": labels})
    nll, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            task.shared_step(batch, "val")
            log_probs = task.model(batch["inputs"]).log_softmax(-1)
            mask = batch["labels"] != IGNORE
            nll -= log_probs[mask].gather(1, batch["labels"][mask][:, None]).sum().item()
            count += int(mask.sum())
    assert count == 20
    assert task.val_loss.compute().item() == pytest.approx(nll / count, rel=1e-6)  # the metric sums in fp32
    assert hasattr(task, "val_acc") == token_accuracy


@pytest.mark.filterwarnings("ignore:You are trying to")  # no trainer: only the metrics accumulate
@pytest.mark.parametrize("compiled", [False, True])
def test_token_accuracy_path_reads_the_head_at_labelled_positions_only(compiled, monkeypatch):
    """MQAR's path (the head on the labelled features only): the loss, its gradients and the accuracy of the full
    logits masked afterwards; a batch without labels gives 0 with zero gradients. Compiled (norms and embedding as
    Inductor graphs): the same, and the loss takes linear_cross_entropy's fused chunk."""
    vocab = 31
    task = tiny_task(vocab, token_accuracy=True)
    eager = copy.deepcopy(task.model)
    if compiled:
        task.model.compile_blocks()
        assert hasattr(task.model.embed.forward, "_torchdynamo_orig_callable")  # compile_module: its forward
    calls, real = [], lce._chunk_function
    monkeypatch.setattr(lce, "_chunk_function", lambda *args: calls.append(1) or real(*args))
    g = torch.Generator().manual_seed(5)
    inputs_ = torch.randint(0, vocab, (3, 12), generator=g)
    labels = torch.full((3, 12), IGNORE)
    labels[:, 3::4] = torch.randint(0, vocab, (3, 3), generator=g)  # one position in four, as MQAR's queries
    params = [p for p in task.parameters() if p.requires_grad]
    logits = eager(inputs_)
    expected = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
    expected_grads = torch.autograd.grad(expected, list(eager.parameters()))
    positions = torch.arange(3, 12, 4).expand(3, -1)  # as MQAR's batches carry them: gathered, not masked
    masked = {"inputs": inputs_, "labels": labels}
    for batch in (masked, {**masked, "label_positions": positions}):
        loss = task.shared_step(batch, "train")
        grads = torch.autograd.grad(loss, params)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-6)  # the loss is taken in fp32
        for grad, expected_grad in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-7)
    mask = labels != IGNORE
    accuracy = (logits[mask].argmax(-1) == labels[mask]).double().mean().item()
    assert task.train_acc.compute().item() == pytest.approx(accuracy)
    none = task.shared_step({"inputs": inputs_, "labels": torch.full_like(labels, IGNORE)}, "val")
    assert none.item() == 0.0
    assert len(calls) == 3 * int(compiled)  # each loss's, the batch without labels' too
    assert all((grad == 0).all() for grad in torch.autograd.grad(none, params, allow_unused=True) if grad is not None)


@pytest.mark.gpu
@pytest.mark.parametrize("compiled", [False, True])
def test_gpu_bf16_at_the_anchor_head_equals_the_unfused_head_in_less_memory(compiled):
    """16k rows x 32k vocab x d 1024 under bf16 autocast: the unfused head's values, and a fraction of its memory."""
    hidden, weight, labels = inputs(
        rows=(8, 2048), d=1024, vocab=32000, dtype=torch.float32, ignored=100, device="cuda"
    )
    peaks = []
    results = []
    for loss_fn, options in ((unfused, {}), (linear_cross_entropy, {"compiled": compiled})):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            results.append(value_and_grads(loss_fn, hidden, weight, labels, **options))
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - base)
    expected, actual = results
    assert_close("loss", actual[0], expected[0], 1e-4)
    assert_close("d hidden", actual[1], expected[1], 1e-2)
    assert_close("d weight", actual[2], expected[2], 1e-2)
    assert peaks[1] < peaks[0] / 3, f"peak {peaks[1] / 2**30:.2f} GiB vs unfused {peaks[0] / 2**30:.2f} GiB"


@pytest.mark.gpu
@pytest.mark.parametrize("whole", [False, True])
@pytest.mark.parametrize("mixer", ["hgrn2", "attention"])
def test_gpu_compiled_model_equals_eager_model(whole, mixer):
    """Compiled GLUs, embedding and loss (or whole blocks: attention's with its rotary table as one op) against the
    eager model: the same loss and gradients up to bf16 rounding."""
    torch.manual_seed(0)
    options = {"expand_ratio": 128} if mixer == "hgrn2" else {"num_heads": 4}
    backbone = BackboneConfig(d_model=256, n_layers=2, mixer=mixer, mixer_options=options, glu_ratio=2.75)
    eager = CausalLM(CausalLMConfig(backbone, vocab_size=1000)).cuda()
    compiled = CausalLM(CausalLMConfig(backbone, vocab_size=1000)).cuda()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_blocks(whole)
    tokens = torch.randint(0, 1000, (2, 257), device="cuda")
    results = []
    for model in (eager, compiled):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model.loss(tokens[:, :-1], tokens[:, 1:])
        results.append((loss, torch.autograd.grad(loss, list(model.parameters()))))
    assert_close("loss", results[1][0], results[0][0], 1e-3)
    for (name, _), a, e in zip(eager.named_parameters(), results[1][1], results[0][1], strict=True):
        assert_close(name, a, e, 3e-2)


def test_the_fused_chunk_is_the_loss_kernel_only_on_a_gpu_unless_switched_off(monkeypatch):
    """LOSS_KERNEL (HGRN_LOSS_KERNEL, on unless 0): fp16/bf16/fp32 logits on CUDA go through our Triton kernel; fp64
    and other devices, and everything with the switch off, through the compiled PyTorch form."""
    from hgrn.ops.triton import cross_entropy

    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    monkeypatch.setattr(lce, "LOSS_KERNEL", True)
    assert lce.fused_chunk_is_kernel(cuda, torch.bfloat16) and not lce.fused_chunk_is_kernel(cpu, torch.bfloat16)
    assert lce._chunk_function(cuda, torch.bfloat16) is cross_entropy.logits_loss_and_grad
    assert lce._chunk_function(cuda, torch.float64) is lce._compiled_chunk()
    assert lce._chunk_function(cpu, torch.bfloat16) is lce._compiled_chunk()
    monkeypatch.setattr(lce, "LOSS_KERNEL", False)
    assert not lce.fused_chunk_is_kernel(cuda, torch.bfloat16)
    assert lce._chunk_function(cuda, torch.bfloat16) is lce._compiled_chunk()
