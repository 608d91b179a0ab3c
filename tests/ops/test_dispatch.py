"""The dispatch: arguments bound to the one declaration, checked whichever backend runs, a backend forced by name;
head-first tensors mixed with time-first ones rejected with an error that names the argument and the layout."""

from __future__ import annotations

import functools
import inspect
import os
import subprocess
import sys
import warnings

import pytest
import torch

from hgrn import ops
from tests.helpers import OPS, on_backend

B, T, H, K, V, D = 2, 8, 3, 4, 5, 6  # T != H, so a T <-> H exchange shows
BACKENDS = ["auto", "reference", "naive", "triton"]


def gla_args(**changed):
    q, k, v, log_f = torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V), -torch.rand(B, T, H, K)
    return {"q": q, "k": k, "v": v, "log_f": log_f, **changed}


def hgrn2_args(**changed):
    return {"q": torch.randn(B, T, H, K), "v": torch.randn(B, T, H, V), "f_logits": torch.randn(B, T, H, K), **changed}


def hgrn1_args(**changed):
    return {"x": torch.randn(B, T, D), "log_f": -torch.rand(B, T, D), **changed}


def step_args(**changed):
    """Decoding-step arguments of GLA and HGRN2 (the op takes those it declares)."""
    q, k, v, log_f = torch.randn(B, H, K), torch.randn(B, H, K), torch.randn(B, H, V), -torch.rand(B, H, K)
    return {"q": q, "k": k, "v": v, "log_f": log_f, "state": torch.zeros(B, H, K, V), **changed}


def head_first(args, *names):
    """args with the [B, T, H, ...] tensors `names` (all if none) transposed to [B, H, T, ...]."""
    return {n: t.transpose(1, 2) if n in (names or args) else t for n, t in args.items()}


HEAD_FIRST_CASES = {  # op, arguments, the error's start
    "gla-k": (
        "gla_recurrence",
        lambda: head_first(gla_args(), "k"),
        r"k has shape \(2, 3, 8, 4\); expected \(2, 8, 3, 4\) = \[B, T, H, K\]",
    ),
    "gla-v": (
        "gla_recurrence",
        lambda: head_first(gla_args(), "v"),
        r"v has shape \(2, 3, 8, 5\); expected \(2, 8, 3, 5\) = \[B, T, H, V\]",
    ),
    "gla-log_f": ("gla_recurrence", lambda: head_first(gla_args(), "log_f"), r"log_f has shape \(2, 3, 8, 4\)"),
    "gla-q": (
        "gla_recurrence",
        lambda: head_first(gla_args(), "q"),
        r"k has shape \(2, 8, 3, 4\); expected \(2, 3, 8, 4\)",
    ),
    "gla-initial_state": (
        "gla_recurrence",
        lambda: head_first(gla_args()) | {"initial_state": torch.zeros(B, H, K, V)},
        r"initial_state has shape \(2, 3, 4, 5\); expected \(2, 8, 4, 5\) = \[N, H, K, V\]",
    ),
    "hgrn2-f_logits": (
        "hgrn2_recurrence",
        lambda: head_first(hgrn2_args(), "f_logits"),
        r"f_logits has shape \(2, 3, 8, 4\); expected \(2, 8, 3, 4\)",
    ),
    "hgrn2-lower_bound": (
        "hgrn2_recurrence",
        lambda: head_first(hgrn2_args()) | {"lower_bound": torch.zeros(H, K)},
        r"lower_bound has shape \(3, 4\); expected \(8, 4\) = \[H, K\]",
    ),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(HEAD_FIRST_CASES))
def test_a_head_first_tensor_among_time_first_ones_is_rejected(case, backend):
    """Detectable when T != H and some tensor is sized by T and H in the other order, or by H alone. When every
    tensor is head-first and there is no lower_bound nor initial_state, the sizes agree and nothing can tell."""
    op, args, message = HEAD_FIRST_CASES[case]
    with pytest.raises(ValueError, match=message + r".*T and H exchanged.*head-first \[B, H, T, \.\.\.\]"):
        call(backend, op, args())


INCONSISTENT_CASES = {  # shapes that disagree otherwise: the same error, without the head-first hint
    "gla-v": ("gla_recurrence", lambda: gla_args(v=torch.randn(B, T, H + 1, V)), r"v has shape"),
    "gla-k": ("gla_recurrence", lambda: gla_args(k=torch.randn(B, T, H, K + 1)), r"k has shape"),
    "gla-q-rank": ("gla_recurrence", lambda: gla_args(q=torch.randn(B, T, H * K)), r"q has shape .* 4 dim"),
    "hgrn1-x": (
        "hgrn1_recurrence",
        lambda: hgrn1_args(x=torch.randn(B, D, T)),
        r"x has shape \(2, 6, 8\); expected \(2, 8, 6\) = \[B, T, D\] \(real: theta is None\)",
    ),
    "hgrn1-theta": (
        "hgrn1_recurrence",
        lambda: hgrn1_args(x=torch.randn(B, T, D, 2), theta=torch.randn(T)),
        r"theta has shape \(8,\); expected \(6,\) = \[D\]",
    ),
    "hgrn1-initial_state": (
        "hgrn1_recurrence",
        lambda: hgrn1_args(initial_state=torch.zeros(B, D, 2)),
        r"initial_state has shape \(2, 6, 2\); expected \(2, 6\) = \[N, D\]",
    ),
    "gla_step-k": (
        "gla_step",
        lambda: step_args(k=torch.randn(B, K, H)),
        r"k has shape \(2, 4, 3\); expected \(2, 3, 4\) = \[B, H, K\]",
    ),
    "hgrn2_step-lower_bound": (
        "hgrn2_step",
        lambda: step_args(f_logits=torch.randn(B, H, K), lower_bound=torch.zeros(K, H)),
        r"lower_bound has shape \(4, 3\); expected \(3, 4\) = \[H, K\]",
    ),
    "hgrn1_step-state": (
        "hgrn1_step",
        lambda: {
            "x": torch.randn(B, D, 2),
            "log_f": -torch.rand(B, D),
            "state": torch.zeros(B, D),
            "theta": torch.randn(D),
        },
        r"state has shape \(2, 6\); expected \(2, 6, 2\) = \[B, D, 2\] \(\(real, imag\) pairs: theta is given\)",
    ),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(INCONSISTENT_CASES))
def test_inconsistent_shapes_name_the_argument_and_its_layout(case, backend):
    op, args, message = INCONSISTENT_CASES[case]
    with pytest.raises(ValueError, match=message) as error:
        call(backend, op, args())
    assert "head-first" not in str(error.value)


def call(backend, op, args):
    """`op` on `backend` ("auto": the dispatch's choice) with the arguments it declares, by name."""
    fn = getattr(ops if backend == "auto" else on_backend(backend), op)
    return fn(**{n: t for n, t in args.items() if n in inspect.signature(fn).parameters})


BOUND_CALLS = {  # every op, called on the naive backend with those of these arguments it declares
    "gla_recurrence": gla_args,
    "hgrn2_recurrence": hgrn2_args,
    "hgrn2_directions": hgrn2_args,
    "hgrn1_recurrence": hgrn1_args,
    "gla_step": step_args,
    "hgrn2_step": lambda: step_args(f_logits=torch.randn(B, H, K)),
    "hgrn1_step": lambda: {"x": torch.randn(B, D), "log_f": -torch.rand(B, D), "state": torch.zeros(B, D)},
}


@pytest.mark.parametrize("op", OPS)
def test_every_op_hands_its_whole_signature_to_the_backend(op, monkeypatch):
    """The backend gets every argument by name, in the signature's order, defaults filled in (the declarations
    write the dict out, which Dynamo traces where it cannot trace locals())."""
    import hgrn.ops.naive

    calls = []
    monkeypatch.setattr(hgrn.ops.naive, op, lambda **arguments: calls.append(arguments))
    call("naive", op, BOUND_CALLS[op]())
    assert list(calls[0]) == list(inspect.signature(getattr(ops, op)).parameters)


def test_the_call_is_bound_to_the_declaration(monkeypatch):
    """Positional or keyword as the caller chose, defaults filled in."""
    import hgrn.ops.naive

    calls = []
    monkeypatch.setattr(hgrn.ops.naive, "hgrn2_recurrence", lambda **arguments: calls.append(arguments))
    args = hgrn2_args()
    with ops.use_backend("naive"):
        ops.hgrn2_recurrence(args["q"], args["v"], f_logits=args["f_logits"], reverse=True)
    assert calls[0]["f_logits"] is args["f_logits"] and calls[0]["reverse"] and calls[0]["scale"] == 1.0
    with pytest.raises(TypeError):
        ops.hgrn2_recurrence(args["q"], args["v"], args["f_logits"], None, 0.5)  # scale is keyword-only


def test_use_backend_nests_and_knows_its_backends():
    unknown = r"backend 'cuda' is not known; choose one of \('triton', 'reference', 'naive'\)"
    with pytest.raises(ValueError, match=unknown), ops.use_backend("cuda"):
        pass
    from hgrn.ops.dispatch import _forced

    with ops.use_backend("naive"):
        with ops.use_backend("reference"):
            assert _forced["backend"] == "reference"
        assert _forced["backend"] == "naive"
    assert _forced["backend"] is None


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)


def test_compiling_blocks_imports_the_kernels_before_any_graph_is_traced():
    """Backbone.compile_blocks loads the kernels' module (load_kernels) when the ops may choose it: imported inside
    a traced first call, it broke the compiled LM step's graph (7 breaks on the H200)."""
    code = (
        "import sys, hgrn.ops as ops; from hgrn.models.backbone import Backbone, BackboneConfig; "
        "Backbone(BackboneConfig(d_model=8, n_layers=1)).compile_blocks(whole=True); "
        "print(ops.USE_KERNELS, 'hgrn.ops.triton' in sys.modules)"
    )
    done = python(code)  # a fresh process: this one may have loaded the kernels already
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == [str(ops.dispatch.HAS_TRITON)] * 2


def test_loading_the_kernels_salts_the_compile_caches_with_their_source():
    """Compiled graphs hold the custom ops' output shapes, which follow the kernels' tile rules: the caches' key
    carries a digest of the kernels' source, added once, beside a tag the user set."""
    import hgrn.ops.triton as kernels

    with torch.compiler.config.patch(cache_key_tag="mine"):
        kernels._tag_compile_caches()
        kernels._tag_compile_caches()
        mine, ours = torch.compiler.config.cache_key_tag.split("+")
    assert mine == "mine" and ours.startswith("hgrn-kernels-") and len(ours) == len("hgrn-kernels-") + 16
    assert "hgrn-kernels-" in torch.compiler.config.cache_key_tag  # the import's own tag, restored


def test_dynamo_takes_the_multiprocessor_count_as_a_constant(monkeypatch):
    """A compiled launch plan (the small-head kernels' segments) reads sm_count: Dynamo takes its value instead of
    tracing into the cached torch.cuda query (it warns when it traces through an lru_cache wrapper)."""
    from hgrn.ops.triton import _common

    monkeypatch.setattr(_common, "_sm_count", functools.cache(lambda index: 132))
    compiled = torch.compile(lambda x: x * _common.sm_count(0), fullgraph=True, backend="eager")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert compiled(torch.ones(1)).item() == 132
    assert not [w for w in caught if "lru_cache" in str(w.message)]


def test_importing_the_ops_leaves_the_kernels_unimported_and_checks_hgrn_ops():
    """The Triton backend (hgrn.ops.triton) is imported on its first use, not by `import hgrn.ops`; a bad HGRN_OPS
    fails the import."""
    done = python("import sys, hgrn.ops as ops; assert 'hgrn.ops.triton' not in sys.modules; print(ops.USE_KERNELS)")
    assert done.returncode == 0, done.stderr
    assert python("import hgrn.ops as ops; assert not ops.USE_KERNELS", HGRN_OPS="reference").returncode == 0
    bad = python("import hgrn.ops", HGRN_OPS="kernels")
    assert bad.returncode != 0 and "HGRN_OPS='kernels' is not known; choose one of ('auto', 'reference')" in bad.stderr


COMPILED_MIXERS = pytest.mark.parametrize(
    ("mixer", "options", "width", "length"),
    [
        ("hgrn2", {"expand_ratio": 16}, 32, 40),
        ("gla", {"expand_k": 1.0, "expand_v": 1.0, "num_heads": 2}, 32, 40),
        ("hgrn1", {"complex_valued": True}, 32, 40),
        ("hgrn2", {"expand_ratio": 4}, 8, 24),
        ("hgrn2", {"expand_ratio": 4, "direction": "bidirectional"}, 8, 24),
        ("hgrn2", {"expand_ratio": 4, "direction": "2d", "grid": (4, 6)}, 8, 24),
        ("hgrn2", {"expand_ratio": 1}, 8, 40),
    ],
    ids=[
        "hgrn2-chunk",
        "gla-chunk",
        "hgrn1",
        "hgrn2-small-head",
        "hgrn2-small-head-both-ways",
        "hgrn2-small-head-2d",
        "hgrn2-head-size-one",
    ],
)


@COMPILED_MIXERS
def test_torch_compile_keeps_the_recurrences_in_one_graph(mixer, options, width, length):
    """A compiled mixer traces as one graph (fullgraph: every recurrence kernel is a custom op, an opaque node) and
    gives the eager outputs and gradients, and the eager outputs without autograd (the kernels' forward that saves
    nothing; the kernels: here the Triton interpreter). Traced into instead, autograd
    Functions around Triton launches make the compile fail."""
    compiled_against_eager(mixer, options, width, length, "cpu")


@pytest.mark.gpu
@COMPILED_MIXERS
def test_torch_compile_keeps_the_recurrences_in_one_graph_on_the_gpu(mixer, options, width, length):
    """The same with the compiled kernels and Inductor's CUDA code (fp32: the TF32 matmul switch stays off)."""
    compiled_against_eager(mixer, options, width, length, "cuda")


def compiled_against_eager(mixer: str, options: dict, width: int, length: int, device: str) -> None:
    from hgrn.layers import build_mixer

    torch.manual_seed(0)
    layer = build_mixer(mixer, width, **options).to(device)
    x = torch.randn(2, length, width, device=device)
    results = []
    torch._dynamo.reset()
    for module in (layer, torch.compile(layer, fullgraph=True)):
        inputs = x.clone().requires_grad_()
        layer.zero_grad()
        with ops.use_backend("triton"):
            out = module(inputs)
            out.square().sum().backward()
        results.append([out, inputs.grad, *(p.grad for p in layer.parameters())])
    for compiled, eager in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-4)  # Inductor reorders fp32 sums
    with torch.no_grad(), ops.use_backend("triton"):  # the kernels' forward without autograd (it saves nothing)
        torch.testing.assert_close(torch.compile(layer, fullgraph=True)(x), layer(x), rtol=1e-3, atol=1e-4)
