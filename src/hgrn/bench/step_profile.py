"""Where a training step's GPU time goes (the LM and ViT step benchmarks): torch.profiler over a few steps, as
Markdown tables of kernel groups and of the top kernels by GPU time (per step); and the kernel time of one call
(the op benchmarks, whose timed loops at small sizes also time the host)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

# kernel-name patterns by group, first match wins (lower-case substrings; HGRN1's scan kernels by their exact names)
GROUPS = (
    ("compiled (Inductor Triton)", ("triton_poi", "triton_red", "triton_per", "triton_tem")),
    ("attention (SDPA / flash)", ("flash", "fmha", "attention", "sdpa")),
    ("matmul (cuBLAS / CUTLASS)", ("gemm", "nvjet", "cutlass", "sm90_", "xmma", "splitk", "cublas")),
    ("embedding (eager backward)", ("sum_and_scatter", "compute_grad_weight", "per_segment", "segment_offset",
                                    "embedding_backward")),
    ("loss (softmax / cross-entropy)", ("softmax", "logsumexp", "cross_entropy", "nll_loss", "scatter", "gather")),
    ("norms", ("norm", "rms", "gammabeta")),
    ("recurrence ops (Triton: ours, fla's)", ("chunk_", "fused_recurrent")),
    ("optimizer (fused AdamW)", ("adam", "multi_tensor", "foreach")),
    ("elementwise / reductions / copies", ("elementwise", "vectorized", "reduce", "copy", "fill", "cat", "index")),
)  # fmt: skip
# our recurrence kernels by their exact names (generic ones such as bwd_kernel among them; a test keeps this in step
# with the kernels hgrn.ops.triton declares)
OUR_RECURRENCE_KERNELS = (
    "prep_kernel", "walk_fwd_kernel", "infer_kernel", "walk_rev_kernel", "pairs_kernel", "intra_bwd_kernel",
    "segment_combine_kernel",  # chunk
    "_fwd_kernel", "_fwd_chained_kernel", "_bwd_kernel", "_bwd_chained_kernel",  # hgrn1_scan
    "fwd_kernel", "bwd_kernel",  # small_head_scan
    "line_fwd_kernel", "line_bwd_kernel", "line_fallback_fwd_kernel", "line_fallback_bwd_kernel",  # small_head_lines
)  # fmt: skip


def group_of(kernel: str) -> str:
    if kernel in OUR_RECURRENCE_KERNELS:
        return "recurrence ops (Triton: ours, fla's)"
    name = kernel.lower()
    return next((group for group, keys in GROUPS if any(k in name for k in keys)), "other")


def kernel_ms(fn: Callable[[], object], repeats: int = 5) -> dict[str, float]:
    """CUDA ms per call of each kernel `fn` launches (mean over `repeats` calls), by kernel name: the GPU's time
    alone, where a timed loop at small sizes also times the host's launches."""
    kernels = _kernels(fn, repeats, cuda=True)
    return {e.key: e.self_device_time_total / repeats / 1e3 for e in kernels}


def profile_steps(step: Callable[[], None], cuda: bool, steps: int = 2, top: int = 15) -> str:
    """Run `steps` steps under the profiler; Markdown: GPU ms per step by group, then the `top` kernels."""
    kernels = _kernels(step, steps, cuda)
    total_us = sum(e.self_device_time_total for e in kernels) or 1.0
    groups: dict[str, float] = defaultdict(float)
    for e in kernels:
        groups[group_of(e.key)] += e.self_device_time_total
    lines = [f"GPU kernel time {total_us / 1e3 / steps:.1f} ms per step.", "", "| group | ms/step | share |",
             "|---|---|---|"]  # fmt: skip
    for group, us in sorted(groups.items(), key=lambda item: -item[1]):
        lines.append(f"| {group} | {us / 1e3 / steps:.2f} | {us / total_us:.1%} |")
    lines += ["", "| kernel | group | calls/step | ms/step | share |", "|---|---|---|---|---|"]
    for e in sorted(kernels, key=lambda e: -e.self_device_time_total)[:top]:
        name = e.key.replace("|", "/")[:90]
        us = e.self_device_time_total
        lines.append(
            f"| `{name}` | {group_of(e.key)} | {e.count / steps:.0f} | {us / 1e3 / steps:.2f} | {us / total_us:.1%} |"
        )
    return "\n".join(lines)


def _kernels(fn: Callable[[], object], calls: int, cuda: bool) -> list:
    """The profiler's kernel events (totals over `calls` calls of `fn`), annotations left out."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        if cuda:
            torch.cuda.synchronize()
    return [
        e
        for e in prof.key_averages()
        if e.device_type == DeviceType.CUDA and e.self_device_time_total > 0 and not _is_annotation(e)
    ]


def _is_annotation(event: object) -> bool:
    """A user annotation's GPU range (Optimizer.step#AdamW.step) spans kernels that are counted already."""
    return bool(getattr(event, "is_user_annotation", False)) or "#" in getattr(event, "key", "")
