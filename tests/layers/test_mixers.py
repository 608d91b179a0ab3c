"""Token mixers: causality, directions, padding, decoding steps, parameter budgets and argument errors."""

from __future__ import annotations

import pytest
import torch

from hgrn import ops
from hgrn.layers import GLU, MIXERS, LayerLowerBounds, build_mixer, mixer_options
from hgrn.layers.hgrn2 import HGRN2Mixer
from tests.helpers import assert_close

D = 16
MIXER_CASES = {
    "hgrn1": {},
    "hgrn1-real": {"complex_valued": False},
    "hgrn2": {"expand_ratio": 4},
    "hgrn2-lra": {"expand_ratio": 4, "q_act": "sigmoid", "v_act": "silu", "bias": True, "q_scale": "inv_sqrt"},
    "gla": {"num_heads": 2},
    "attention": {"num_heads": 2},
}


def make(case: str, direction: str = "causal", grid=None) -> torch.nn.Module:
    torch.manual_seed(0)
    name = case.split("-")[0]
    return build_mixer(name, D, direction, grid, **MIXER_CASES[case]).double()


def lower_bound(case: str) -> torch.Tensor | None:
    return torch.full((D,), 0.3, dtype=torch.float64) if make(case).uses_lower_bound else None


@pytest.mark.parametrize("case", MIXER_CASES)
def test_causal_mixers_do_not_look_ahead(case):
    mixer = make(case)
    x = torch.randn(2, 12, D, dtype=torch.float64)
    y = mixer(x, lower_bound(case))
    x2 = x.clone()
    x2[:, 7:] = torch.randn_like(x2[:, 7:])
    y2 = mixer(x2, lower_bound(case))
    assert torch.equal(y[:, :7], y2[:, :7])
    assert not torch.allclose(y[:, 7:], y2[:, 7:])


@pytest.mark.parametrize("case", MIXER_CASES)
def test_decoding_steps_equal_the_parallel_forward(case):
    mixer = make(case)
    x = torch.randn(2, 9, D, dtype=torch.float64)
    lb = lower_bound(case)
    y = mixer(x, lb)
    state = mixer.initial_state(2)
    steps = []
    for t in range(x.shape[1]):
        y_t, state = mixer.step(x[:, t], state, lb)
        steps.append(y_t)
    assert_close("step outputs", torch.stack(steps, 1), y, 1e-10)


def test_every_registered_mixer_has_a_case_here():
    """A mixer added to hgrn.layers.MIXERS runs every test of this file (README, Models: adding a token mixer)."""
    assert set(MIXERS) <= set(MIXER_CASES)


@pytest.mark.parametrize("case", sorted(MIXERS))
def test_bidirectional_sees_both_sides_and_ignores_padding(case):
    mixer = make(case, "bidirectional")
    x = torch.randn(2, 10, D, dtype=torch.float64)
    mask = torch.ones(2, 10, dtype=torch.bool)
    y = mixer(x, lower_bound(case), mask)
    x_changed = x.clone()
    x_changed[:, -1] += 1
    assert not torch.allclose(mixer(x_changed, lower_bound(case), mask)[:, 0], y[:, 0]), "reverse scan missing"
    # Appending padding of any content leaves the real tokens' outputs unchanged.
    padded = torch.cat((x, torch.randn(2, 5, D, dtype=torch.float64)), 1)
    pad_mask = torch.cat((mask, torch.zeros(2, 5, dtype=torch.bool)), 1)
    assert_close("real tokens", mixer(padded, lower_bound(case), pad_mask)[:, :10], y, 1e-12)


def test_bidirectional_hgrn2_is_forward_plus_reversed_scan():
    mixer = make("hgrn2", "bidirectional")
    x = torch.randn(1, 7, D, dtype=torch.float64)
    q, f_logits, v = mixer._project(x)
    fwd = ops.hgrn2_recurrence(q, v, f_logits)[0]
    rev = ops.hgrn2_recurrence(q.flip(1), v.flip(1), f_logits.flip(1))[0].flip(1)
    expected = mixer.out_proj(mixer.norm((fwd + rev).flatten(-2)))
    assert_close("bidirectional", mixer(x), expected, 1e-12)


def test_2d_scan_covers_rows_and_columns_both_ways():
    mixer = make("hgrn2", "2d", grid=(3, 4))
    x = torch.randn(2, 12, D, dtype=torch.float64)
    q, f_logits, v = mixer._project(x)

    def scan_lines(lines):  # lines: list of index lists; sum of forward and reverse scans along each
        out = torch.zeros_like(q[..., :1].expand(*q.shape[:-1], v.shape[-1])).clone()
        for idx in lines:
            for rev in (False, True):
                out[:, idx] += ops.hgrn2_recurrence(q[:, idx], v[:, idx], f_logits[:, idx], reverse=rev)[0]
        return out

    rows = [[r * 4 + c for c in range(4)] for r in range(3)]
    cols = [[r * 4 + c for r in range(3)] for c in range(4)]
    o = scan_lines(rows) + scan_lines(cols)
    expected = mixer.out_proj(mixer.norm(o.flatten(-2)))
    assert_close("2d", mixer(x), expected, 1e-12)
    with pytest.raises(ValueError, match="grid"):
        mixer(torch.randn(1, 10, D, dtype=torch.float64))


@pytest.mark.parametrize("expand_ratio", [1, 2, 4, 8, 16])
def test_hgrn2_has_exactly_4d2_weights_for_any_expand_ratio(expand_ratio):
    mixer = HGRN2Mixer(D, expand_ratio, norm="layernorm")
    norm_params = sum(p.numel() for p in mixer.norm.parameters())
    assert norm_params == 2 * D
    assert sum(p.numel() for p in mixer.parameters()) == 4 * D * D + norm_params


def test_hgrn2_with_expand_ratio_1_is_a_real_elementwise_recurrence():
    mixer = HGRN2Mixer(D, 1).double()
    x = torch.randn(2, 11, D, dtype=torch.float64)
    lb = torch.rand(D, dtype=torch.float64) * 0.5
    q, f_logits, v = (t.squeeze(-1) for t in mixer._project(x))
    log_f, one_minus_f = ops.lower_bounded_gate(f_logits, lb)
    h = ops.hgrn1_recurrence(one_minus_f * v, log_f)[0]
    expected = mixer.out_proj(mixer.norm(q * h))
    assert_close("expand_ratio=1", mixer(x, lb), expected, 1e-12)


def test_layer_lower_bounds_rise_from_zero_and_stay_below_one():
    bounds_module = LayerLowerBounds(6, D)
    torch.manual_seed(0)
    for logits in (torch.zeros(6, D), torch.randn(6, D) * 2, torch.randn(6, D) * 2):
        bounds_module.logits.data.copy_(logits)
        bounds = bounds_module()
        assert torch.equal(bounds[0], torch.zeros(D))
        assert (bounds[1:] >= bounds[:-1]).all()
        assert (bounds >= 0).all() and (bounds < 1).all()
    bounds_module.logits.data.zero_()
    assert_close("uniform init gives k / L", bounds_module()[:, 0], torch.arange(6.0) / 6, 1e-6)


def test_glu_is_act_of_gate_times_up_projection():
    glu = GLU(D, 8, act="none")
    x = torch.randn(3, D)
    assert_close("bilinear", glu(x), glu.down_proj(glu.gate_proj(x) * glu.up_proj(x)), 1e-6)


def test_bad_mixer_arguments_name_the_argument_value_and_choices():
    with pytest.raises(ValueError, match=r"expand_ratio=3 must divide d_model=16 .*allowed: \[1, 2, 4, 8, 16\]"):
        build_mixer("hgrn2", 16, expand_ratio=3)
    with pytest.raises(ValueError, match=r"mixer='mamba' is not a known token mixer; choose one of"):
        build_mixer("mamba", 16)
    with pytest.raises(ValueError, match=r"mixer_options \['expand'\] are not options of mixer 'hgrn2'"):
        build_mixer("hgrn2", 16, expand=2)
    with pytest.raises(ValueError, match=r"norm='groupnorm'"):
        build_mixer("hgrn2", 16, norm="groupnorm")
    with pytest.raises(ValueError, match=r"direction='sideways'"):
        build_mixer("hgrn1", 16, "sideways")
    with pytest.raises(ValueError, match=r"q_act='tanh'"):
        build_mixer("hgrn2", 16, q_act="tanh")
    assert "expand_ratio" in mixer_options("hgrn2")
    mixer = make("hgrn2")
    with pytest.raises(ValueError, match=r"state has shape"):
        mixer.step(torch.randn(2, D, dtype=torch.float64), torch.zeros(2, 4, 4, 5, dtype=torch.float64))


def test_rotary_angles_come_from_one_op_that_compiled_blocks_keep_whole():
    """The rotary table is cos and sin of t / 10000^(2i / d) (float64 check), and the custom op torch.compile traces
    as one node, so Inductor computes the [T, d] table once instead of fusing its power, cosine and sine into every
    element of q and k."""
    positions = torch.arange(37)
    table = torch.ops.hgrn.rotary_table(positions, 8, 10000.0)
    angles = positions.double()[:, None] / 10000.0 ** (torch.arange(0, 8, 2).double() / 8)
    torch.testing.assert_close(table.double(), torch.cat((angles.cos(), angles.sin()), -1), rtol=0, atol=2e-5)
    torch.library.opcheck(torch.ops.hgrn.rotary_table, (positions, 8, 10000.0))
    graphs = []

    def capture(gm: torch.fx.GraphModule, _inputs):
        graphs.append(gm)
        return gm.forward

    mixer = make("attention")
    x = torch.randn(2, 5, D, dtype=torch.float64)
    torch.testing.assert_close(torch.compile(mixer, backend=capture)(x), mixer(x), rtol=0, atol=0)
    targets = [node.target for gm in graphs for node in gm.graph.nodes if node.op == "call_function"]
    assert torch.ops.hgrn.rotary_table.default in targets or torch.ops.hgrn.rotary_table in targets
    assert not {torch.cos, torch.sin, torch.Tensor.cos, torch.Tensor.sin} & set(targets)
