"""The small-head kernels (hgrn.ops.triton.small_head: heads of <= SMALL_HEAD_MAX channels, each head's state scanned
element-wise in registers) against the float64 reference: outputs, final states and every gradient, through the
public ops on the Triton backend (the interpreter on CPU, -m gpu in bf16 / fp32 at benchmark shapes)."""

from __future__ import annotations

import pytest
import torch

from hgrn import ops
from hgrn.ops.triton import small_head
from hgrn.ops.triton.chunk import GATE_GLA, GATE_HGRN2, GATE_HGRN2_LB
from tests.helpers import assert_close, on_backend
from tests.ops.test_triton_chunk import BF16_GATE_TOL, BF16_TOL, check, cpu_only, make_inputs

kernels = on_backend("triton")
exact_ops = on_backend("reference")
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def public(kind):
    return kernels.gla_recurrence if kind == "gla" else kernels.hgrn2_recurrence


def forced(kind, segments):
    """small_head.recurrence with a forced number of segments (the plan's rule gives one on the CPU)."""
    gate = {"gla": GATE_GLA, "hgrn2": GATE_HGRN2, "hgrn2_lb": GATE_HGRN2_LB}[kind]

    def fn(q, *args, scale=1.0, initial_state=None, output_final_state=False, reverse=False, cu_seqlens=None):
        kz, lg, lb, v = (args[0], args[2], None, args[1]) if kind == "gla" else (args[1], None, args[2:], args[0])
        return small_head.recurrence(
            q, kz, lg, lb[0] if lb else None, v, gate=gate, scale=scale, initial_state=initial_state,
            output_final_state=output_final_state, reverse=reverse, cu_seqlens=cu_seqlens, segments=segments,
        )  # fmt: skip

    return fn


@cpu_only
@pytest.mark.parametrize(
    "kind, head, reverse, T",
    [("gla", 1, False, 45), ("gla", 3, True, 45), ("hgrn2", 2, True, 45), ("hgrn2", 5, False, 21),
     ("hgrn2_lb", 1, True, 45), ("hgrn2_lb", 3, False, 45), ("hgrn2_lb", 8, True, 21)],
)  # fmt: skip
def test_interpreted_head_sizes(kind, head, reverse, T):
    """Head sizes 1, 2, 3 (odd: padded to 4), 5 and 8, both directions, H = 3 (a partial block of heads); head size 1
    without an initial state (the first tile then starts from zeros, later tiles from the saved states)."""
    inputs = make_inputs(kind, 2, T, 3, head, head, h0=head != 1, seed=head)
    check(kind, inputs, public(kind), torch.float32, 2e-5, scale=0.7, reverse=reverse)


@cpu_only
def test_interpreted_unequal_key_and_value_sizes():
    inputs = make_inputs("gla", 2, 30, 2, 2, 3, seed=4)
    check("gla", inputs, public("gla"), torch.float32, 2e-5, scale=0.5)


@cpu_only
@pytest.mark.parametrize("gates", ["forget", "remember", "mixed"])
def test_interpreted_small_heads_extreme_gates(gates):
    inputs = make_inputs("hgrn2_lb", 1, 70, 2, 2, 2, gates=gates, seed=5)
    check("hgrn2_lb", inputs, public("hgrn2_lb"), torch.float32, 2e-5, gate_tol=1e-4)


@cpu_only
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_interpreted_small_heads_packed_sequences(reverse):
    cu = torch.tensor([0, 9, 9, 40, 53])  # includes an empty sequence
    inputs = make_inputs("hgrn2_lb", 1, 53, 2, 2, 1, n_seqs=4, seed=9)
    check("hgrn2_lb", inputs, public("hgrn2_lb"), torch.float32, 2e-5, reverse=reverse, cu_seqlens=cu)


@cpu_only
@pytest.mark.parametrize("kind, reverse", [("gla", False), ("hgrn2_lb", True)])
def test_interpreted_segments(kind, reverse, monkeypatch):
    """Sequences cut into 3 segments (walked from zero states, joined, walked again); BH = 2 heads per program."""
    monkeypatch.setenv("HGRN_SMALL_TILES", "BH=2,BT=4")
    inputs = make_inputs(kind, 1, 48, 3, 2, 2, seed=11)
    check(kind, inputs, forced(kind, 3), torch.float32, 2e-5, scale=0.7, reverse=reverse)
    assert small_head.make_plan(inputs["q"], inputs["v"], None, 3).NS == 3


def check_forward_only(inputs, fn, tol, **kwargs):
    """Output and final state of a forward that saves nothing for a backward (its own tiles) against the reference."""
    args = [inputs[n].float() for n in ("q", "v", "f_logits")] + [inputs["lower_bound"].float()]
    with torch.no_grad():
        o, s = fn(*args, initial_state=inputs["initial_state"].float(), output_final_state=True, **kwargs)
    exact = [inputs[n] for n in ("q", "v", "f_logits", "lower_bound")]
    o_ref, s_ref = exact_ops.hgrn2_recurrence(*exact, initial_state=inputs["initial_state"], output_final_state=True,
                                              **kwargs)  # fmt: skip
    assert_close("o", o, o_ref, tol)
    assert_close("final_state", s, s_ref, tol)


@cpu_only
@pytest.mark.parametrize("head", [1, 2, 8])
def test_interpreted_forward_only(head, monkeypatch):
    """Without autograd the forward saves no tile states; 8-step tiles from head size 2: partial tiles, both
    directions, initial and final states, 3 segments, packed sequences."""
    inputs = make_inputs("hgrn2_lb", 2, 45, 3, head, head, seed=head)
    steps_per_tile = small_head.make_plan(inputs["q"], inputs["v"], None).BT
    assert steps_per_tile == (16 if head == 1 else 8)
    for reverse in (False, True):
        check_forward_only(inputs, public("hgrn2_lb"), 2e-5, scale=0.7, reverse=reverse)
    check_forward_only(inputs, forced("hgrn2_lb", 3), 2e-5, reverse=True)
    cu = torch.tensor([0, 9, 9, 40, 53])
    packed = make_inputs("hgrn2_lb", 1, 53, 2, head, head, n_seqs=4, seed=9)
    check_forward_only(packed, public("hgrn2_lb"), 2e-5, cu_seqlens=cu)


@cpu_only
@pytest.mark.parametrize(
    ("gate", "options"),
    [
        (GATE_GLA, {"reverse": True}),
        (GATE_GLA, {"reverse": True, "dtype": torch.float16}),
        (GATE_HGRN2_LB, {"h0": True, "want_final": True, "segments": 3}),
    ],
    ids=["gla-reverse", "gla-reverse-fp16", "hgrn2-lb-state-segments"],
)
def test_custom_ops_pass_opcheck(gate, options):
    """torch.library.opcheck on hgrn::small_head_forward (and through its autograd formula the backward op): schema,
    fake shapes and dtypes against the real outputs (half-precision inputs too: the empty results take their dtype),
    autograd registration, AOT dispatch with static and dynamic shapes."""
    g = torch.Generator().manual_seed(0)
    B, T, H, E = 1, 48, 3, 2
    dtype = options.get("dtype", torch.float32)
    q, kz, v = (torch.randn(B, T, H, E, generator=g).to(dtype).requires_grad_() for _ in range(3))
    lg = -torch.rand(B, T, H, E, generator=g).to(dtype).requires_grad_() if gate == GATE_GLA else None
    lb = torch.rand(H, E, generator=g).mul(0.9).requires_grad_() if gate == GATE_HGRN2_LB else None
    h0 = torch.randn(B, H, E, E, generator=g).requires_grad_() if options.get("h0") else None
    args = (q, kz, lg, lb, v, h0, None, 0.7, gate, options.get("reverse", False), options.get("want_final", False),
            options.get("segments"), True)  # fmt: skip
    torch.library.opcheck(torch.ops.hgrn.small_head_forward.default, args)


def test_path_choice_by_head_size(monkeypatch):
    """Heads of <= SMALL_HEAD_MAX channels (K and V) take the small-head path, wider ones the chunked kernels."""
    taken = []
    monkeypatch.setattr(small_head, "recurrence", lambda *a, **k: taken.append(a[0].shape[-1]) or (None, None))
    for size in (1, small_head.SMALL_HEAD_MAX, small_head.SMALL_HEAD_MAX + 1):
        x = torch.zeros(1, 4, 2, size)
        assert small_head.fits(x, x) == (size <= small_head.SMALL_HEAD_MAX)
    x, wide = torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, small_head.SMALL_HEAD_MAX * 2)
    assert not small_head.fits(x, wide)
    kernels.hgrn2_recurrence(x, x, x)
    assert taken == [2]


@pytest.mark.gpu
@pytest.mark.parametrize("head", [1, 2, 3, 4, 5, 8, 16])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_gpu_small_heads(head, dtype):
    tol = BF16_TOL if dtype == torch.bfloat16 else 1e-4
    inputs = make_inputs("hgrn2_lb", 2, 3000, 64 // head, head, head, gates="mixed", device="cuda", seed=head)
    check("hgrn2_lb", inputs, ops.hgrn2_recurrence, dtype, tol, BF16_GATE_TOL, scale=head**-0.5, reverse=head % 2 == 1)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["gla", "hgrn2"])
def test_gpu_small_heads_segmented_and_packed(kind):
    """One long sequence (segments by the plan's rule) and packed ones, fp32."""
    inputs = make_inputs(kind, 1, 20000, 4, 8, 8, device="cuda", seed=3)
    check(kind, inputs, public(kind), torch.float32, 1e-4, scale=0.3)
    cu = torch.tensor([0, 100, 100, 3000, 7001], device="cuda")
    inputs = make_inputs(kind, 1, 7001, 4, 4, 4, n_seqs=4, device="cuda", seed=4)
    check(kind, inputs, public(kind), torch.float32, 1e-4, reverse=True, cu_seqlens=cu)


@pytest.mark.gpu
@pytest.mark.parametrize("head", [1, 2, 4, 8])
def test_gpu_small_heads_forward_only(head):
    """The forward without autograd (8-step tiles from head size 2), fp32, long sequences."""
    inputs = make_inputs("hgrn2_lb", 2, 3000, 64 // head, head, head, gates="mixed", device="cuda", seed=head)
    check_forward_only(inputs, ops.hgrn2_recurrence, 1e-4, scale=head**-0.5, reverse=head % 2 == 1)
