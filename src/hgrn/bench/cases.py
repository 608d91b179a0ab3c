"""What is timed: each implementation of an op as a pair of callables (forward, forward + backward) on fresh inputs.

Inputs are bf16, random normal; gate logits z ~ N(0, 1), so log f = logsigmoid(z) as in the fla anchor runs.
fla's chunk_gla gets g = logsigmoid(z) and k = 1 - exp(g) precomputed (its HGRN2 layer forms them in PyTorch);
our HGRN2 op gets z and a lower bound [H, K] (zeros, so the same gates) and forms k and log f in the kernel.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from hgrn import ops
from hgrn.bench.roofline import Shape

Run = Callable[[], object]
HAS_FLA = importlib.util.find_spec("fla") is not None


@dataclass(frozen=True)
class Case:
    impl: str
    group: str  # what is compared: hgrn2, hgrn1, layer-hgrn2, layer-hgrn1
    op: str | None  # roofline op (hgrn2, gla, attention, hgrn1, hgrn1c); None for layers
    shape: Shape
    build: Callable[[], tuple[Run, Run]]
    graph: bool = True  # also time a CUDA graph; not the reference: it cannot be captured, and a failed capture
    # leaves the CUDA RNG unusable for the cases after it


def _leaf(*shape: int, dtype=torch.bfloat16, fill: str = "randn", shift: float = 0.0) -> Tensor:
    t = torch.randn(*shape, device="cuda", dtype=torch.float32) + shift if fill == "randn" else torch.zeros(*shape)
    return t.to(device="cuda", dtype=dtype).requires_grad_()


def _pair(forward: Callable[[], Tensor], inputs: list[Tensor]) -> tuple[Run, Run]:
    """(forward under no_grad, forward + backward with a fixed random output gradient, no .grad accumulation).

    Nothing runs here, so the first call of either is the first call of the implementation."""
    grad_out: list[Tensor] = []

    def fwd() -> object:
        with torch.no_grad():
            return forward()

    def fwd_bwd() -> object:
        out = forward()
        if not grad_out:
            grad_out.append(torch.randn_like(out))
        return torch.autograd.grad(out, inputs, grad_out[0])

    return fwd, fwd_bwd


def hgrn2_cases(s: Shape, *, fla: bool, sdpa: bool, ref: bool, slow_path: bool) -> list[Case]:
    B, T, H, D = s.B, s.T, s.H, s.D
    scale = D**-0.5

    def ours(shift: float = 0.0) -> Callable[[], tuple[Run, Run]]:
        def build():
            q, v, z = _leaf(B, T, H, D), _leaf(B, T, H, D), _leaf(B, T, H, D, shift=shift)
            lb = _leaf(H, D, dtype=torch.float32, fill="zeros")
            return _pair(lambda: ops.hgrn2_recurrence(q, v, z, lb, scale=scale)[0], [q, v, z, lb])

        return build

    def fla_chunk_gla():
        from fla.ops.gla import chunk_gla

        q, v = _leaf(B, T, H, D), _leaf(B, T, H, D)
        g = F.logsigmoid(torch.randn(B, T, H, D, device="cuda")).to(torch.bfloat16)
        k = (1 - g.float().exp()).to(torch.bfloat16).requires_grad_()
        g.requires_grad_()
        return _pair(lambda: chunk_gla(q, k, v, g, scale=scale)[0], [q, k, v, g])

    def torch_reference():
        q, v, z = _leaf(B, T, H, D), _leaf(B, T, H, D), _leaf(B, T, H, D)
        lb = _leaf(H, D, dtype=torch.float32, fill="zeros")
        op = ops.use_backend("reference")(ops.hgrn2_recurrence)
        return _pair(lambda: op(q, v, z, lb, scale=scale)[0], [q, v, z, lb])

    cases = [Case("ours", "hgrn2", "hgrn2", s, ours())]
    if slow_path:  # log f ~ -6 per step: every chunk exceeds the factorisable range and takes the exact path
        cases.append(Case("ours (exact path: log f ~ -6)", "hgrn2", "hgrn2", s, ours(-6.0)))
    if fla and HAS_FLA:
        cases.append(Case("fla chunk_gla", "hgrn2", "gla", s, fla_chunk_gla))
    if sdpa:
        cases.append(Case("torch SDPA causal", "hgrn2", "attention", s, lambda: _sdpa(s)))
    if ref:
        cases.append(Case("PyTorch reference", "hgrn2", "hgrn2", s, torch_reference, graph=False))
    return cases


def _sdpa(s: Shape) -> tuple[Run, Run]:
    q, k, v = (_leaf(s.B, s.H, s.T, s.D) for _ in range(3))
    return _pair(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), [q, k, v])


def hgrn1_cases(s: Shape, *, fla: bool, ref: bool, complex_valued: bool) -> list[Case]:
    B, T, D = s.B, s.T, s.D

    def inputs():
        x = _leaf(B, T, D)
        g = F.logsigmoid(torch.randn(B, T, D, device="cuda") + 2).to(torch.bfloat16).requires_grad_()
        return x, g

    def ours():
        x, g = inputs()
        return _pair(lambda: ops.hgrn1_recurrence(x, g)[0], [x, g])

    def ours_complex():
        x, g = _leaf(B, T, D, 2), inputs()[1]
        theta = _leaf(D, dtype=torch.float32)
        return _pair(lambda: ops.hgrn1_recurrence(x, g, theta)[0], [x, g, theta])

    def fla_op(name: str):
        def build():
            import fla.ops.hgrn as fla_hgrn

            x, g = inputs()
            fn = getattr(fla_hgrn, name)
            return _pair(lambda: fn(x, g)[0], [x, g])

        return build

    def torch_reference():
        x, g = inputs()
        op = ops.use_backend("reference")(ops.hgrn1_recurrence)
        return _pair(lambda: op(x, g)[0], [x, g])

    cases = [Case("ours", "hgrn1", "hgrn1", s, ours)]
    if complex_valued:
        cases.append(Case("ours (complex)", "hgrn1", "hgrn1c", s, ours_complex))
    if fla and HAS_FLA:
        cases += [
            Case("fla fused_recurrent_hgrn", "hgrn1", "hgrn1", s, fla_op("fused_recurrent_hgrn")),
            Case("fla chunk_hgrn", "hgrn1", "hgrn1", s, fla_op("chunk_hgrn")),
        ]
    if ref:
        cases.append(Case("PyTorch reference", "hgrn1", "hgrn1", s, torch_reference, graph=False))
    return cases


def layer_cases(s: Shape, *, fla: bool) -> list[Case]:
    """Full token mixers at d_model = H * D: ours (hgrn.layers), fla's, and softmax attention through SDPA."""
    d = s.H * s.D

    def module(make: Callable[[], torch.nn.Module], unwrap: bool = False) -> Callable[[], tuple[Run, Run]]:
        def build():
            layer = make().to(device="cuda", dtype=torch.bfloat16)
            x = _leaf(s.B, s.T, d)

            def forward():
                y = layer(x)
                return y[0] if unwrap else y

            return _pair(forward, [x, *layer.parameters()])

        return build

    from hgrn.layers import AttentionMixer, HGRN1Mixer, HGRN2Mixer

    cases = [
        Case("ours HGRN2Mixer", "layer-hgrn2", None, s, module(lambda: HGRN2Mixer(d, expand_ratio=s.D))),
        Case("ours HGRN1Mixer", "layer-hgrn1", None, s, module(lambda: HGRN1Mixer(d))),
        # fla's HGRNAttention is the real-valued HGRN1 (4 d^2 weights); ours defaults to the paper's complex one (7 d^2)
        Case("ours HGRN1Mixer (real)", "layer-hgrn1", None, s, module(lambda: HGRN1Mixer(d, complex_valued=False))),
        Case("attention (SDPA)", "layer-hgrn2", None, s, module(lambda: AttentionMixer(d, num_heads=s.H))),
    ]
    if fla and HAS_FLA:
        from fla.layers import HGRN2Attention, HGRNAttention

        cases += [
            Case(
                "fla HGRN2Attention",
                "layer-hgrn2",
                None,
                s,
                module(lambda: HGRN2Attention(hidden_size=d, expand_ratio=s.D), True),
            ),
            Case("fla HGRNAttention", "layer-hgrn1", None, s, module(lambda: HGRNAttention(hidden_size=d), True)),
        ]
    return cases
