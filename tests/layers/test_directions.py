"""2-D directions: '2d_series' (the official Hgru2_2d_series, HGRN2's Path-X choice) against explicit line-by-line
constructions, its reach over the grid, padding, and the errors for a wrong grid or a causal model."""

from __future__ import annotations

import copy

import pytest
import torch

from hgrn.layers import build_mixer, scan_directions
from hgrn.models import BackboneConfig, CausalLM, CausalLMConfig
from hgrn.models.vision import ImageClassifierConfig
from hgrn.ops import hgrn2_recurrence, use_backend
from tests.helpers import assert_close
from tests.ops.test_triton_chunk import cpu_only

D = 16
GRID = (3, 4)  # height != width, so a transposed pass would show
HEIGHT, WIDTH = GRID
COLUMNS = [[r * WIDTH + c for r in range(HEIGHT)] for c in range(WIDTH)]  # row-major token indices, top to bottom
ROWS = [[r * WIDTH + c for c in range(WIDTH)] for r in range(HEIGHT)]  # left to right
HGRN2_LRA = {"q_act": "sigmoid", "v_act": "silu", "norm": "layernorm", "bias": True}  # the official LRA module
SCAN_MIXERS = {
    "hgrn1": ("hgrn1", {}),
    "hgrn1-real": ("hgrn1", {"complex_valued": False}),
    "hgrn2": ("hgrn2", {"expand_ratio": 4, **HGRN2_LRA}),
    "gla": ("gla", {"num_heads": 2}),
}


def make(case: str, direction: str, grid=GRID) -> torch.nn.Module:
    torch.manual_seed(0)
    name, options = SCAN_MIXERS[case]
    return build_mixer(name, D, direction, grid, **options).double()


def bound_for(mixer: torch.nn.Module) -> torch.Tensor | None:
    return torch.linspace(0.0, 0.6, D, dtype=torch.float64) if mixer.uses_lower_bound else None


def over_lines(one_line, x: torch.Tensor, lines: list[list[int]]) -> torch.Tensor:
    """`one_line` applied to each line of tokens separately, written back to the lines' positions."""
    out = x.new_zeros(x.shape)
    for idx in lines:
        out[:, idx] = one_line(x[:, idx])
    return out


def official_hgrn2_pass(mixer, bound: torch.Tensor, line: torch.Tensor) -> torch.Tensor:
    """Hgru2_2d_series.compute on one line: projections, forward + reversed scan token by token, readout by the
    output gate, norm over the width, output projection."""
    q, f_logits, v = mixer._project(line)
    head_bound = bound.view(mixer.num_heads, mixer.head_dim)
    with use_backend("naive"):
        forward = hgrn2_recurrence(q, v, f_logits, head_bound)[0]
        backward = hgrn2_recurrence(q.flip(1), v.flip(1), f_logits.flip(1), head_bound)[0].flip(1)
    return mixer.out_proj(mixer.norm((forward + backward).flatten(-2)))


def grads_of(output: torch.Tensor, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    weights = torch.randn(output.shape, generator=torch.Generator().manual_seed(1), dtype=output.dtype)
    return torch.autograd.grad((output * weights).sum(), inputs)


@pytest.mark.parametrize("expand_ratio", [1, 4])  # 1 is Path-X's
def test_hgrn2_series_is_the_official_pass_along_columns_then_rows(expand_ratio):
    torch.manual_seed(0)
    mixer = build_mixer("hgrn2", D, "2d_series", GRID, expand_ratio=expand_ratio, **HGRN2_LRA).double()
    x = torch.randn(2, HEIGHT * WIDTH, D, dtype=torch.float64, requires_grad=True)
    bound = torch.linspace(0.0, 0.6, D, dtype=torch.float64)

    def one_pass(line):
        return official_hgrn2_pass(mixer, bound, line)

    expected = over_lines(one_pass, over_lines(one_pass, x, COLUMNS), ROWS)
    actual = mixer(x, bound)
    assert_close("series output", actual, expected, 1e-12)
    inputs = [x, *mixer.parameters()]
    for name, got, want in zip(
        ["x", *dict(mixer.named_parameters())], grads_of(actual, inputs), grads_of(expected, inputs), strict=True
    ):
        assert_close(f"grad {name}", got, want, 1e-10)


@cpu_only
@pytest.mark.parametrize("direction", ["2d", "2d_series", "bidirectional"])
def test_hgrn2_directions_on_the_small_head_kernels(direction):
    """HGRN2 with head size 4 (hgrn.ops.triton.small_head: each line walked both ways in one program, the grid's
    columns read in place) over the non-square grid ('2d': rows and columns; '2d_series': columns, then rows, of the
    mixer) or the sequence with its last three tokens padded ('bidirectional'), on the Triton backend (the
    interpreter, fp32) against the float64 reference backend: the output and every gradient."""
    mixer = make("hgrn2", direction, None if direction == "bidirectional" else GRID)
    x = torch.randn(1, HEIGHT * WIDTH, D, dtype=torch.float64, requires_grad=True)
    mask = torch.arange(HEIGHT * WIDTH)[None] < HEIGHT * WIDTH - 3 if direction == "bidirectional" else None
    bound = bound_for(mixer)
    expected = mixer(x, bound, mask)
    wanted = grads_of(expected, [x, *mixer.parameters()])
    fp32 = copy.deepcopy(mixer).float()
    x32 = x.detach().float().requires_grad_()
    with use_backend("triton"):
        actual = fp32(x32, bound.float(), mask)
        got = grads_of(actual.double(), [x32, *fp32.parameters()])
    assert_close("output", actual, expected, 1e-5)
    for name, g, w in zip(["x", *dict(mixer.named_parameters())], got, wanted, strict=True):
        assert_close(f"grad {name}", g, w, 1e-4)


@pytest.mark.parametrize("case", SCAN_MIXERS)
def test_series_is_the_bidirectional_mixer_along_columns_then_rows(case):
    series, bidirectional = make(case, "2d_series"), make(case, "bidirectional", None)
    bidirectional.load_state_dict(series.state_dict())
    x = torch.randn(2, HEIGHT * WIDTH, D, dtype=torch.float64)
    bound = bound_for(series)

    def one_pass(line):
        return bidirectional(line, bound)

    expected = over_lines(one_pass, over_lines(one_pass, x, COLUMNS), ROWS)
    assert_close(f"{case} series", series(x, bound), expected, 1e-12)


@pytest.mark.parametrize("case", SCAN_MIXERS)
def test_series_reaches_every_cell_and_parallel_only_its_row_and_column(case):
    x = torch.randn(1, HEIGHT * WIDTH, D, dtype=torch.float64, requires_grad=True)
    reach = {}
    for direction in ("2d", "2d_series"):
        mixer = make(case, direction)
        (grad,) = torch.autograd.grad(mixer(x, bound_for(mixer))[0, 0].sum(), x)
        reach[direction] = grad[0].abs().sum(-1).view(GRID) > 0
    assert reach["2d_series"].all()
    cross = torch.zeros(GRID, dtype=torch.bool)
    cross[0, :] = cross[:, 0] = True
    assert torch.equal(reach["2d"], cross)


@pytest.mark.parametrize("direction", ["2d", "2d_series"])
@pytest.mark.parametrize("case", SCAN_MIXERS)
def test_grid_directions_ignore_padding_at_the_end_of_the_grid(case, direction):
    mixer = make(case, direction)
    x = torch.randn(2, HEIGHT * WIDTH, D, dtype=torch.float64)
    mask = torch.ones(2, HEIGHT * WIDTH, dtype=torch.bool)
    mask[:, -5:] = False  # the last row and the last cell of the row above: trailing in every row and column
    y = mixer(x, bound_for(mixer), mask)
    changed = x.clone()
    changed[:, -5:] = torch.randn_like(changed[:, -5:])
    assert_close("real cells", mixer(changed, bound_for(mixer), mask)[:, :-5], y[:, :-5], 1e-12)


def test_series_shares_one_set_of_weights_between_the_passes():
    count = {d: sum(p.numel() for p in make("hgrn2", d).parameters()) for d in ("bidirectional", "2d", "2d_series")}
    assert count["2d_series"] == count["2d"] == count["bidirectional"]


def test_attention_has_no_scan_order_so_every_non_causal_direction_is_full_attention():
    torch.manual_seed(0)
    x = torch.randn(2, HEIGHT * WIDTH, D, dtype=torch.float64)
    outputs = []
    for direction in ("bidirectional", "2d", "2d_series"):
        torch.manual_seed(0)
        outputs.append(build_mixer("attention", D, direction, GRID, num_heads=2).double()(x))
    assert_close("2d", outputs[1], outputs[0], 1e-14)
    assert_close("2d_series", outputs[2], outputs[0], 1e-14)


def test_grid_errors_name_the_direction_and_the_grid():
    with pytest.raises(ValueError, match=r"direction='2d_series' needs grid=\(height, width\).*got grid=None"):
        build_mixer("hgrn2", D, "2d_series")
    with pytest.raises(ValueError, match=r"direction='diagonal' is not known; choose one of .*'2d_series'"):
        build_mixer("hgrn2", D, "diagonal")
    mixer = make("hgrn2", "2d_series")
    padded_past_the_grid = torch.randn(2, HEIGHT * WIDTH + 3, D, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"sequence length 15 does not match grid=\(3, 4\) \(12 tokens\).*pad inside"):
        mixer(padded_past_the_grid)
    with pytest.raises(ValueError, match="use mix_directions"):
        scan_directions(lambda *t, reverse: t[0], [torch.zeros(1, 12, 2)], "2d_series", GRID)


def test_series_is_not_for_a_causal_lm_and_image_heads_fill_its_grid():
    backbone = BackboneConfig(d_model=D, n_layers=1, mixer="hgrn2", direction="2d_series", grid=GRID)
    with pytest.raises(ValueError, match=r"a causal LM needs backbone\.direction='causal'; got '2d_series'"):
        CausalLM(CausalLMConfig(backbone, vocab_size=10))
    image = ImageClassifierConfig(
        backbone=BackboneConfig(d_model=D, n_layers=1, direction="2d_series"), image_size=32, patch_size=8
    )
    assert image.backbone.grid == (4, 4)
