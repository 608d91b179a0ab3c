"""hgrn2_directions on the small-head kernels (both ways along each line in one program, the grid's columns read in
place) against the float64 reference composition of one-way scans: the output and the gradients of the packed
projection the three inputs are views of, and of the lower bound. The interpreter on CPU (several tiles per line by
HGRN_SMALL_TILES), -m gpu at the ViT and LRA grid shapes."""

from __future__ import annotations

import pytest
import torch

from hgrn import ops
from hgrn.ops import triton as kernels
from hgrn.ops.triton import small_head
from hgrn.ops.triton.chunk import GATE_HGRN2, GATE_HGRN2_LB
from tests.helpers import assert_close, on_backend
from tests.ops.test_triton_chunk import BF16_GATE_TOL, BF16_TOL, GATES, cpu_only

reference = on_backend("reference")
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def projection(B, T, H, K, *, gates="normal", bound=True, device="cpu", seed=0):
    """(x [B, T, 3 H K] whose thirds are q, f_logits, v, lower bound [H, K] or None), float64."""
    g = torch.Generator().manual_seed(seed)
    q, z, v = (torch.randn(B, T, H * K, generator=g, dtype=torch.float64) for _ in range(3))
    z = GATES[gates](z.view(B, T, H, K)).reshape(B, T, H * K)
    lb = torch.rand(H, K, generator=g, dtype=torch.float64) * 0.9 if bound else None
    return torch.cat([q, z, v], -1).to(device), None if lb is None else lb.to(device)


def run(fn, x, lb, heads, dtype, exact=False, **options):
    """(o, gradients of a fixed random projection of o w.r.t. x and the bound); q, f_logits, v are views of x."""
    x = x.to(dtype)
    lb = None if lb is None else lb.float()
    leaves = [t.double() if exact else t for t in (x, lb) if t is not None]
    leaves = [t.requires_grad_() for t in leaves]
    B, T, _ = x.shape
    q, z, v = (t.view(B, T, heads, -1) for t in leaves[0].chunk(3, -1))
    o = fn(q, v, z, leaves[1] if lb is not None else None, **options)
    g = torch.Generator(device=o.device).manual_seed(1)
    loss = (o.double() * torch.randn(o.shape, generator=g, device=o.device, dtype=torch.float64)).sum()
    return o, torch.autograd.grad(loss, leaves)


def check(x, lb, heads, dtype, tol, gate_tol=None, **options):
    o, grads = run(ops.hgrn2_directions if x.is_cuda else kernels_fn, x, lb, heads, dtype, **options)
    o_ref, grads_ref = run(reference.hgrn2_directions, x, lb, heads, dtype, exact=True, **options)
    assert_close("o", o, o_ref, tol)
    assert_close("dx", grads[0], grads_ref[0], tol)
    if lb is not None:
        assert_close("dlower_bound", grads[1], grads_ref[1], gate_tol or tol)


kernels_fn = on_backend("triton").hgrn2_directions


@cpu_only
@pytest.mark.parametrize(
    "direction, grid, head, bound",
    [("bidirectional", None, 3, True), ("2d", (3, 5), 1, True), ("2d", (4, 3), 8, False), ("2d", (4, 4), 2, True)],
)
def test_interpreted_directions(direction, grid, head, bound, monkeypatch):
    """Lines of several 4-step tiles (the tile states saved for each direction), head sizes 1, 2, 3 (padded to 4)
    and 8 (one image: the interpreter's time grows with the state), with and without the lower bound, non-square
    grids."""
    monkeypatch.setenv("HGRN_SMALL_TILES", "BT=4")
    T = 23 if grid is None else grid[0] * grid[1]
    x, lb = projection(1 if head == 8 else 2, T, 3, head, bound=bound, seed=head)
    check(x, lb, 3, torch.float32, 2e-5, scale=0.7, direction=direction, grid=grid)


@cpu_only
def test_interpreted_directions_extreme_gates():
    x, lb = projection(1, 20, 2, 2, gates="mixed", seed=5)
    check(x, lb, 2, torch.float32, 2e-5, 1e-4, direction="2d", grid=(4, 5))


@cpu_only
@pytest.mark.parametrize(
    "grid, heads, head, slabs, bound",
    [((3, 5), 2, 8, 1, True), ((4, 4), 4, 4, 2, False), ((5, 3), 8, 2, 1, True), ((2, 7), 6, 8, 2, True)],
)
def test_interpreted_parallel_form(grid, heads, head, slabs, bound, monkeypatch):
    """Grid lines of at most 16 tokens in the parallel form (HGRN_SMALL_TILES PAR=1): decay-weighted scores, both
    ways in one program, the backward recomputing them; slabs of 16 channels holding 2, 4 or 8 heads, programs of
    two slabs with the second masked (1 slab; 3 slabs), non-square grids."""
    monkeypatch.setenv("HGRN_SMALL_TILES", f"PAR=1,BH={slabs}")
    x, lb = projection(1, grid[0] * grid[1], heads, head, bound=bound, seed=head)
    q = x[..., : heads * head].view(1, -1, heads, head)
    assert all(plan.parallel for plan in small_head.line_plans(q, q, grid))
    check(x, lb, heads, torch.float32, 2e-5, scale=0.7, direction="2d", grid=grid)


@cpu_only
def test_parallel_form_leaves_steep_lines_to_the_scan(monkeypatch):
    """Lines whose decays span more than e^{+-STEEP} about their middle token (bf16 operands lose the lower bound's
    gradient beyond it) are listed by the parallel form and walked by the scan: some programs of each launch are
    listed, not all, and the result is exact."""
    monkeypatch.setenv("HGRN_SMALL_TILES", "PAR=1")
    grid, heads, K = (16, 6), 4, 8
    x, lb = projection(1, grid[0] * grid[1], heads, K, bound=False, seed=3)
    x[..., heads * K + 16 : 2 * heads * K] -= 20.0  # the second slab's gate logits (x: q, z, v): log f ~ -20
    q, z, v = (t.view(1, -1, heads, K) for t in x.float().chunk(3, -1))
    _, slots = small_head.directions_forward(q, z, None, None, v, 0.7, GATE_HGRN2, list(grid), True)
    listed = [int(s[0]) for s in slots]
    programs = [(s.numel() - 1) // 2 for s in slots]
    assert all(0 < n < total for n, total in zip(listed, programs, strict=True)), (listed, programs)
    check(x, lb, heads, torch.float32, 2e-5, scale=0.7, direction="2d", grid=grid)


@pytest.mark.parametrize(
    ("dtype", "grid", "head", "tiles", "parallel"),
    [(torch.bfloat16, (16, 16), 8, "", True), (torch.float16, (14, 14), 4, "", True),
     (torch.float32, (16, 16), 8, "", False), (torch.float32, (16, 16), 8, "PAR=1", True),
     (torch.bfloat16, (16, 16), 8, "PAR=0", False), (torch.bfloat16, (32, 32), 8, "", False),
     (torch.bfloat16, (16, 16), 3, "", False)],
)  # fmt: skip
def test_grids_of_16_bit_inputs_take_the_parallel_form(dtype, grid, head, tiles, parallel, monkeypatch):
    """The rule: lines of at most 16 tokens with 16-bit inputs (and heads dividing 16) in the parallel form, with its
    register cap on a GPU; fp32, longer lines or heads not dividing 16 keep the scan; PAR=0 / PAR=1 override."""
    monkeypatch.setenv("HGRN_SMALL_TILES", tiles)
    monkeypatch.setattr(small_head, "INTERPRET", False)  # plan as on a GPU
    q = torch.zeros(2, grid[0] * grid[1], 48, head, dtype=dtype)
    plans = small_head.line_plans(q, q, grid)
    assert [plan.parallel for plan in plans] == [parallel, parallel]
    assert all(plan.maxnreg == (small_head.PARALLEL_MAXNREG if parallel else None) for plan in plans)


def test_fused_path_choice(monkeypatch):
    """Small heads take the fused kernels unless the lines are too few to fill the GPU unsegmented (then, as wide
    heads, one one-way scan per pass)."""
    taken = []
    monkeypatch.setattr(small_head, "directions", lambda *a, **k: taken.append("fused"))
    monkeypatch.setattr(kernels, "_hgrn2_by_passes", lambda *a, **k: taken.append("passes"))
    for shape, direction in [((2, 6, 3, 2), "2d"), ((1, 200, 1, 2), "bidirectional"), ((1, 6, 1, 16), "2d")]:
        x = torch.zeros(shape)
        kernels.hgrn2_directions(x, x, x, None, scale=1.0, direction=direction, grid=(2, 3))
    assert taken == ["fused", "passes", "passes"]


@cpu_only
@pytest.mark.parametrize(
    "grid, heads, tiles", [(None, 3, ""), ([4, 6], 3, ""), ([4, 6], 8, "PAR=1")], ids=["both-ways", "2d", "2d-par"]
)
def test_custom_ops_pass_opcheck(grid, heads, tiles, monkeypatch):
    """torch.library.opcheck on hgrn::small_head_directions_forward (through its autograd formula the backward op):
    schema, fake shapes against the real outputs, autograd registration, AOT dispatch, static and dynamic shapes;
    also in the parallel form (its saved slots in place of tile states)."""
    monkeypatch.setenv("HGRN_SMALL_TILES", tiles)
    g = torch.Generator().manual_seed(0)
    B, T, H, E = 2, 24, heads, 2
    q, kz, v = (torch.randn(B, T, H, E, generator=g).requires_grad_() for _ in range(3))
    assert all(plan.parallel == bool(tiles) for plan in small_head.line_plans(q, v, grid) or [])
    lb = torch.rand(H, E, generator=g).mul(0.9).requires_grad_()
    args = (q, kz, None, lb, v, 0.7, GATE_HGRN2_LB, grid, True)
    torch.library.opcheck(torch.ops.hgrn.small_head_directions_forward.default, args)


def test_bad_direction_arguments():
    x = torch.zeros(1, 6, 2, 2)
    with pytest.raises(ValueError, match="not one hgrn2_directions runs"):
        ops.hgrn2_directions(x, x, x, direction="causal")
    with pytest.raises(ValueError, match="needs grid"):
        ops.hgrn2_directions(x, x, x, direction="2d")
    with pytest.raises(ValueError, match="does not match grid"):
        ops.hgrn2_directions(x, x, x, direction="2d", grid=(2, 2))


@pytest.mark.gpu
@pytest.mark.parametrize("tiles", ["PAR=1", "PAR=1,BH=2"])
@pytest.mark.parametrize(
    "grid, heads, head, gates, dtype",
    [((14, 14), 24, 8, "mixed", torch.bfloat16), ((16, 16), 24, 8, "normal", torch.bfloat16),
     ((12, 16), 24, 8, "mixed", torch.float32), ((16, 9), 16, 4, "normal", torch.bfloat16),
     ((8, 16), 32, 2, "mixed", torch.bfloat16)],
    ids=["grid14-mixed", "grid16", "grid12x16-fp32", "grid16x9-e4", "grid8x16-e2"],
)  # fmt: skip
def test_gpu_parallel_form(grid, heads, head, gates, dtype, tiles, monkeypatch):
    """The ViT's 2-D scan in the parallel form (tensor-core scores): head sizes 8, 4 and 2 (slabs of 2, 4 and 8
    heads), bf16 and fp32, non-square grids, steep lines included."""
    monkeypatch.setenv("HGRN_SMALL_TILES", tiles)
    x, lb = projection(8, grid[0] * grid[1], heads, head, gates=gates, device="cuda", seed=head)
    tol, gate_tol = (BF16_TOL, BF16_GATE_TOL) if dtype == torch.bfloat16 else (1e-4, None)
    check(x, lb, heads, dtype, tol, gate_tol, scale=head**-0.5, direction="2d", grid=grid)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "B, grid, heads, head, dtype",
    [(8, (14, 14), 24, 8, torch.bfloat16), (4, (32, 32), 32, 2, torch.float32), (2, (128, 64), 8, 1, torch.bfloat16),
     (4, 3000, 16, 4, torch.bfloat16)],
    ids=["grid14-e8-bf16", "lra-image-fp32", "grid128x64-e1-bf16", "bidirectional-bf16"],
)  # fmt: skip
def test_gpu_directions(B, grid, heads, head, dtype):
    T, options = (grid, dict(direction="bidirectional")) if isinstance(grid, int) else (grid[0] * grid[1], {})
    options = options or dict(direction="2d", grid=grid)
    x, lb = projection(B, T, heads, head, gates="mixed", device="cuda", seed=head)
    tol = BF16_TOL if dtype == torch.bfloat16 else 1e-4
    check(x, lb, heads, dtype, tol, BF16_GATE_TOL if dtype == torch.bfloat16 else None, scale=head**-0.5, **options)
