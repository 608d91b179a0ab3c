"""LM training step at the 341M anchor: ours (HGRN2, HGRN1, GLA, attention) against transformers' Llama (SDPA) and
fla's HGRN2ForCausalLM, in one run -> results/bench/lm-step-<gpu>-<date>.{json,md}.

    python -m hgrn.bench.lm_step [--rows ours-hgrn2 llama-sdpa ...] [--profile ours-hgrn2 ...] [--deadline 400]
    python -m hgrn.bench.lm_step --smoke          # CPU, tiny sizes, our models only (tests)

Anchor: d 1024, 24 layers, vocab 32000 (tied), GLU 2816 SiLU, RMSNorm, B 8 x T 2048 random tokens, fp32 weights
under bf16 autocast, fused AdamW. Each row runs in its own process with empty Triton and Inductor caches, so its
first step (compilation, tuning) is what a user's first step costs; then `warmup` steps and `steps` timed steps
(synchronised wall clock). Peak memory is torch.cuda.max_memory_allocated over the whole process. MFU = 6 N tokens/s
over the bf16 matmul rate measured in the same run (N: unique parameters, the tied head counted once).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from hgrn.bench import lm_step_report as report
from hgrn.bench.step_profile import profile_steps
from hgrn.layers import linear_cross_entropy
from hgrn.models import CausalLM, CausalLMConfig, model_config
from hgrn.ops.triton import precompile


@dataclass(frozen=True)
class Shape:
    d_model: int
    n_layers: int
    vocab: int
    batch: int
    length: int
    glu: int
    heads: int  # attention heads; HGRN2's expand ratio (head size) is d_model / heads, GLA has heads / 2


ANCHOR = Shape(d_model=1024, n_layers=24, vocab=32000, batch=8, length=2048, glu=2816, heads=8)
SMOKE = Shape(d_model=32, n_layers=2, vocab=64, batch=2, length=16, glu=64, heads=2)
OURS = ("ours-hgrn2", "ours-hgrn2-blocks", "ours-hgrn2-graphs", "ours-hgrn2-before", "ours-hgrn2-fused-eager",
        "ours-hgrn1", "ours-gla", "ours-attention")  # fmt: skip
PEERS = ("llama-sdpa", "fla-hgrn2")
DEFAULT_ROWS = ("ours-hgrn2-before", "ours-hgrn2", "ours-hgrn2-blocks", "ours-hgrn2-graphs", "llama-sdpa",
                "ours-hgrn2-fused-eager", "ours-hgrn1", "ours-gla", "ours-attention", "fla-hgrn2")  # fmt: skip
ROW_NOTES = {
    "ours-hgrn2": "CausalLM, norms, GLUs and loss compiled (compile_blocks), chunked linear + cross-entropy",
    "ours-hgrn2-blocks": "as ours-hgrn2, whole blocks compiled, the recurrence a custom op in the graph",
    "ours-hgrn2-graphs": "as ours-hgrn2-blocks, compiled with mode='reduce-overhead' (CUDA graphs)",
    "ours-hgrn2-before": "CausalLM as before this change: eager, full fp32 logits + F.cross_entropy",
    "ours-hgrn2-fused-eager": "eager, chunked linear + cross-entropy (the loss change alone)",
    "ours-hgrn1": "HGRN1 mixer (complex), as ours-hgrn2",
    "ours-gla": "GLA mixer (heads / 2 heads), as ours-hgrn2",
    "ours-attention": "attention mixer (SDPA, RoPE), as ours-hgrn2",
    "llama-sdpa": "transformers LlamaForCausalLM, attn_implementation='sdpa', tied embeddings",
    "fla-hgrn2": "fla HGRN2ForCausalLM (chunk mode, fused norm/SwiGLU/cross-entropy), tied embeddings",
}
GPU_SETTING = "fp32 weights, bf16 autocast, fused AdamW"
SMOKE_SETTING = "fp32, eager (CPU smoke)"
LossFn = Callable[[Tensor], Tensor]  # tokens [B, T + 1] -> scalar loss


def _mixer_options(mixer: str, shape: Shape) -> dict:
    return {
        "hgrn2": {"expand_ratio": shape.d_model // shape.heads, "norm": "simple_rmsnorm"},
        "hgrn1": {},
        "gla": {"num_heads": max(1, shape.heads // 2)},
        "attention": {"num_heads": shape.heads},
    }[mixer]


def ours(
    mixer: str,
    shape: Shape,
    *,
    fused_loss: bool = True,
    compiled: bool = True,
    whole: bool = False,
    mode: str | None = None,
) -> tuple:
    """Our CausalLM at `shape`: the hgrn2-lm-370m backbone with the mixer swapped and the sizes set."""
    backbone = asdict(model_config("hgrn2-lm-370m").backbone)
    backbone |= {"mixer": mixer, "mixer_options": _mixer_options(mixer, shape), "d_model": shape.d_model,
                 "n_layers": shape.n_layers, "glu_ratio": shape.glu / shape.d_model}  # fmt: skip
    model = CausalLM(CausalLMConfig(backbone=backbone, vocab_size=shape.vocab))
    if compiled:
        model.compile_blocks(whole, mode)

    def loss(tokens: Tensor) -> Tensor:
        inputs, labels = tokens[:, :-1], tokens[:, 1:]
        if fused_loss:
            return model.loss(inputs, labels)
        return nn.functional.cross_entropy(model(inputs).flatten(0, 1).float(), labels.flatten())

    return model, loss


def llama(shape: Shape) -> tuple:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=shape.vocab, hidden_size=shape.d_model, intermediate_size=shape.glu,
                         num_hidden_layers=shape.n_layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.heads, max_position_embeddings=shape.length,
                         tie_word_embeddings=True, attn_implementation="sdpa")  # fmt: skip
    model = LlamaForCausalLM(config)
    return model, lambda tokens: model(input_ids=tokens[:, :-1], labels=tokens[:, :-1]).loss  # it shifts labels


def fla_hgrn2(shape: Shape) -> tuple:
    from fla.models import HGRN2Config, HGRN2ForCausalLM

    config = HGRN2Config(vocab_size=shape.vocab, hidden_size=shape.d_model, intermediate_size=shape.glu,
                         num_hidden_layers=shape.n_layers, expand_ratio=shape.d_model // shape.heads,
                         tie_word_embeddings=True)  # fmt: skip
    model = HGRN2ForCausalLM(config)
    return model, lambda tokens: model(input_ids=tokens[:, :-1], labels=tokens[:, :-1]).loss


def build(row: str, shape: Shape, eager: bool = False) -> tuple[nn.Module, LossFn]:
    """The row's model and loss; `eager` leaves out compilation (smoke runs: it outlasts their steps on a CPU)."""
    compiled = not eager
    builders = {
        "ours-hgrn2": lambda: ours("hgrn2", shape, compiled=compiled),
        "ours-hgrn2-blocks": lambda: ours("hgrn2", shape, compiled=compiled, whole=True),
        "ours-hgrn2-graphs": lambda: ours("hgrn2", shape, compiled=compiled, whole=True, mode="reduce-overhead"),
        "ours-hgrn2-before": lambda: ours("hgrn2", shape, fused_loss=False, compiled=False),
        "ours-hgrn2-fused-eager": lambda: ours("hgrn2", shape, compiled=False),
        "ours-hgrn1": lambda: ours("hgrn1", shape, compiled=compiled),
        "ours-gla": lambda: ours("gla", shape, compiled=compiled),
        "ours-attention": lambda: ours("attention", shape, compiled=compiled),
        "llama-sdpa": lambda: llama(shape),
        "fla-hgrn2": lambda: fla_hgrn2(shape),
    }
    if row not in builders:
        raise ValueError(f"row {row!r} is not known; choose from {list(builders)}")
    return builders[row]()


def measure_row(row: str, shape: Shape, device: str, steps: int, warmup: int, profile: bool = False) -> dict:
    """The row's model (on a CPU: fp32, not compiled; smoke runs) measured by `measure_model`."""
    torch.manual_seed(0)
    with torch.device(device):
        model, loss_fn = build(row, shape, eager=device != "cuda")
    ours = row in OURS and device == "cuda"
    ahead = precompile.ENABLED if ours else None  # our kernels compiled all at once early
    bf16_kernel = linear_cross_entropy.fused_chunk_is_kernel(torch.device(device), torch.bfloat16)
    loss_kernel = bf16_kernel and getattr(model, "compiled", False) if ours else None
    result = measure_model(model, loss_fn, shape, device, steps, warmup, profile)
    return {"row": row, "note": ROW_NOTES[row], "kernels_ahead": ahead, "loss_kernel": loss_kernel, **result}


def measure_model(
    model: nn.Module, loss_fn: LossFn, shape: Shape, device: str, steps: int, warmup: int, profile: bool = False
) -> dict:
    """With fused AdamW (bf16 autocast on CUDA): time the first step, run `warmup` more, time `steps` steps; then one
    step read phase by phase for where the peak memory falls; then, with `profile`, the profiler tables."""
    cuda = device == "cuda"
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=cuda)
    tokens = torch.randint(0, shape.vocab, (shape.batch, shape.length + 1), device=device)
    losses: list[Tensor] = []  # kept on the device: reading them each step would synchronise

    def forward() -> Tensor:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
            loss = loss_fn(tokens)
        losses.append(loss.detach())
        return loss

    def update() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def step() -> None:
        forward().backward()
        update()

    with compile_seconds() as first_compile:
        first_by_phase = {name: seconds for name, (seconds, _) in _by_phase(forward, update, cuda).items()}
    _timed(step, warmup, cuda)
    each: list[float] = []
    seconds = _timed(step, steps, cuda, each) / steps
    result = {
        "params": sum(p.numel() for p in model.parameters()),  # parameters() yields a tied weight once
        "first_step_s": sum(first_by_phase.values()),
        "first_step_s_by_phase": first_by_phase,
        "first_step_compile_s": first_compile,
        "step_s": seconds,
        "step_ms_each": [round(s * 1e3, 2) for s in each],
        "tokens_per_s": shape.batch * shape.length / seconds,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "loss_first": float(losses[0]),
        "loss_last": float(losses[-1]),
        "dynamo": _dynamo_summary(),
    }
    if cuda:
        result["peak_gib_by_phase"] = {name: peak for name, (_, peak) in _by_phase(forward, update, cuda).items()}
    if profile:
        result["profile"] = profile_steps(step, cuda)
    return result


def _by_phase(forward: Callable[[], Tensor], update: Callable[[], None], cuda: bool) -> dict[str, tuple[float, float]]:
    """One step read phase by phase, forward + loss, backward, optimiser step: (seconds, peak allocated GiB) of
    each. Of the first step the seconds show where compilation and the kernels' JIT fall."""
    measured = {}

    def phase(name: str, run: Callable[[], Tensor | None]) -> Tensor | None:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = run()
        if cuda:
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
        measured[name] = (time.perf_counter() - start, peak)
        return out

    loss = phase("forward+loss", forward)
    phase("backward", loss.backward)
    phase("optimizer", update)
    return measured


INDUCTOR_IN_PROCESS = ("async_compile.precompile", "reload_kernel_in_parent")  # Inductor's kernels compiled here


@contextmanager
def compile_seconds(top: int = 6) -> Iterator[dict]:
    """Where the compilation inside the block goes, in seconds, for a first step's breakdown: "triton_jit", the
    Triton kernels compiled in this process by kernel (ours, and Inductor's where they did not go to its worker
    processes; a kernel found in the cache costs nothing; None on a Triton without `knobs.compilation.listener`), and
    "torch_compile", TorchDynamo's and Inductor's timed phases by name (nested: a phase includes those it calls), the
    `top` longest and those of Inductor's kernels compiled in this process (INDUCTOR_IN_PROCESS), not its workers.
    "at_launch": those of our kernels that compiled on the launching thread, not on precompile's compile threads
    (the launch waited for them), and for a kernel compiled both ways, how its two specialisations differ
    ("differs": why the compilation ahead did not serve the launch). "by_thread": the Triton JIT seconds by thread
    (name without its pool number): on the main thread they hold up the step (Inductor's kernels land there while its
    compile workers are still starting). "pool_ready_s": seconds into the block when Inductor's worker pool answered
    its readiness probe (0.0: before; None: not within it; absent: no probe sent)."""
    from torch._dynamo.utils import compilation_time_metrics

    found: dict = {}
    jit: dict[str, float] = {}
    at_launch: dict[str, float] = {}
    by_thread: dict[str, float] = {}
    variants: dict[str, dict[bool, set[tuple]]] = {}  # kernel -> ahead? -> specialisations
    before = {name: sum(times) for name, times in compilation_time_metrics.items()}
    compilation = _triton_compilation_knobs()
    previous = getattr(compilation, "listener", None)

    def listen(*, src: object, times: object, cache_hit: bool, **rest: object) -> None:
        if not cache_hit:
            name, seconds = getattr(src, "name", "?"), times.total / 1e6
            jit[name] = jit.get(name, 0.0) + seconds
            thread = threading.current_thread().name
            ahead = thread.startswith(precompile.COMPILE_THREAD_NAME)
            thread = thread.rstrip("0123456789").rstrip("_-")
            by_thread[thread] = by_thread.get(thread, 0.0) + seconds
            if not ahead and str(getattr(getattr(src, "fn", None), "module", "")).startswith("hgrn."):  # ours
                at_launch[name] = at_launch.get(name, 0.0) + seconds
            variants.setdefault(name, {}).setdefault(ahead, set()).add(_specialisation(src))
        if previous is not None:
            previous(src=src, times=times, cache_hit=cache_hit, **rest)

    if compilation is not None:
        compilation.listener = listen
    record_pool_ready = _when_pool_ready()
    try:
        yield found
    finally:
        if compilation is not None:
            compilation.listener = previous
        spent = {name: sum(times) - before.get(name, 0.0) for name, times in compilation_time_metrics.items()}
        found["triton_jit"] = _largest_first(jit) if compilation is not None else None
        largest = _largest_first(spent)
        found["torch_compile"] = {
            name: s for i, (name, s) in enumerate(largest.items()) if i < top or name in INDUCTOR_IN_PROCESS
        }
        found["at_launch"] = _largest_first(at_launch)
        found["by_thread"] = _largest_first(by_thread)
        found["differs"] = {name: _difference(ways) for name, ways in variants.items() if len(ways) == 2}
        record_pool_ready(found)


def _when_pool_ready() -> Callable[[dict], None]:
    """A function that records in a dict, as "pool_ready_s", the seconds from now until Inductor's compile-worker pool
    answered its readiness probe (0.0: it had already; None: not yet). Records nothing where no probe was sent."""
    start = time.perf_counter()
    try:
        from torch._inductor.async_compile import AsyncCompile
    except ImportError:
        return lambda found: None
    future = getattr(AsyncCompile, "_ready_future", None)
    if future is None:
        return lambda found: None
    answered = [0.0] if future.done() else []
    future.add_done_callback(lambda _: answered.append(time.perf_counter() - start))
    return lambda found: found.update(pool_ready_s=answered[0] if answered else None)


def _specialisation(src: object) -> tuple:
    """What Triton specialised a compilation on (ASTSource: constants and attributes, by argument), hashable."""
    names = getattr(getattr(src, "fn", None), "arg_names", None) or []

    def named(items: dict) -> tuple:
        return tuple(sorted(f"{names[k[0]] if len(k) == 1 and k[0] < len(names) else k}={v}" for k, v in items.items()))

    return named(getattr(src, "constants", {}) or {}) + named(getattr(src, "attrs", {}) or {})


def _difference(ways: dict[bool, set[tuple]]) -> str:
    """The items only the launch's specialisations have, and those only the ones compiled ahead have."""
    ahead, launch = set().union(*ways[True]), set().union(*ways[False])
    return f"at launch {sorted(launch - ahead) or '-'}, ahead {sorted(ahead - launch) or '-'}"


def _largest_first(seconds: dict[str, float]) -> dict[str, float]:
    """The positive entries, largest first."""
    return dict(sorted(((name, s) for name, s in seconds.items() if s > 0), key=lambda item: -item[1]))


def _triton_compilation_knobs() -> object | None:
    """triton.knobs.compilation where it has the compile listener (Triton 3.4 and later), else None."""
    try:
        from triton import knobs
    except ImportError:
        return None
    return knobs.compilation if hasattr(knobs.compilation, "listener") else None


def _timed(step: Callable[[], None], n: int, cuda: bool, each: list[float] | None = None) -> float:
    """Seconds for n steps, from the host's clock with the device synchronised at both ends; with `each`, also the
    seconds of every step appended to it: on CUDA between events recorded on the stream after each step (no
    synchronisation in between, so the host still runs ahead), else from the host's clock."""

    def mark() -> object:
        if not cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    marks = [mark()]
    for _ in range(n):
        step()
        marks.append(mark())
    if cuda:
        torch.cuda.synchronize()
    total = time.perf_counter() - start
    if each is not None:
        each.extend(a.elapsed_time(b) / 1e3 if cuda else b - a for a, b in itertools.pairwise(marks))
    return total


def _dynamo_summary() -> dict:
    """How compilation went: graphs compiled, graph breaks and their most frequent reasons."""
    from torch._dynamo.utils import counters

    breaks = counters["graph_break"]
    reasons = sorted(breaks.items(), key=lambda item: -item[1])[:3]
    return {
        "graphs": counters["stats"].get("unique_graphs", 0),
        "graph_breaks": sum(breaks.values()),
        "reasons": [f"{n}x {reason[:160]}" for reason, n in reasons],
    }


def row_environment(cache: Path) -> dict[str, str]:
    """A row's process environment: its own Triton and Inductor caches under `cache`, and Triton keeping autotuning
    results there (TRITON_CACHE_AUTOTUNING, unless set otherwise), so that fla's 5-7 minutes of tuning are done once
    per --cache-root: a first run of fla alone tunes, later runs compile only the configurations it chose."""
    caches = {"TRITON_CACHE_DIR": str(cache / "triton"), "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor")}
    return {"TRITON_CACHE_AUTOTUNING": "1", **os.environ, **caches}


def run_row_process(row: str, args: argparse.Namespace, timeout: float) -> dict:
    """One row in a fresh process with its own (empty, unless kept from before) Triton and Inductor caches. A cache
    that already holds files (a row measured before under this --cache-root, or one restored there, e.g. fla's
    autotuned kernels, which take longer to tune than one GPU call lasts) marks the row "warm_cache": its first step is
    then not a cold start."""
    cache = args.cache_root / row
    env = row_environment(cache)
    warm = any(path.is_file() for name in ("triton", "inductor") for path in (cache / name).rglob("*"))
    out = cache / "row.json"
    cache.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "hgrn.bench.lm_step", "--worker", row, "--worker-out", str(out),
               "--steps", str(args.steps), "--warmup", str(args.warmup)]  # fmt: skip
    command += ["--profile-worker"] if row in args.profile else []
    command += ["--smoke"] if args.smoke else []
    started = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, timeout=timeout, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return {"row": row, "note": ROW_NOTES[row], "error": f"not finished within {timeout:.0f} s"}
    if done.returncode != 0 or not out.exists():
        tail = (done.stdout + done.stderr).strip().splitlines()[-12:]
        return {"row": row, "note": ROW_NOTES[row], "error": " // ".join(tail)[-2000:]}
    result = json.loads(out.read_text())
    result["process_s"] = time.perf_counter() - started
    result["warm_cache"] = warm
    return result


def measure_matmul_tflops() -> float:
    """bf16 8192^3 matmul on random data, median of triton's do_bench."""
    from triton.testing import do_bench

    m = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    return 2 * 8192**3 / do_bench(lambda: m @ m, warmup=25, rep=200, return_mode="median") / 1e9


def run(args: argparse.Namespace) -> dict:
    """Measure args.rows (smoke: in this process; else each in its own process) into a result (report.assemble)."""
    started, run_id = time.perf_counter(), report.new_run_id()
    gpu = "cpu" if args.smoke else torch.cuda.get_device_name()
    earlier = json.loads(args.merge.read_text()) if args.merge else report.day_result(args.out, gpu, run_id[:10])
    if args.smoke:
        rows = [measure_row(row, SMOKE, "cpu", steps=1, warmup=0) for row in args.rows]
        return report.assemble(rows, asdict(SMOKE), gpu, run_id, None, SMOKE_SETTING, earlier)
    tflops = measure_matmul_tflops()
    print(f"bf16 matmul: {tflops:.0f} TFLOP/s", flush=True)
    rows = []
    for i, row in enumerate(args.rows):
        left = args.deadline - (time.perf_counter() - started) if args.deadline else args.row_timeout
        if left < 20:
            rows.append({"row": row, "note": ROW_NOTES[row], "error": "not run: the deadline was reached"})
            continue
        last = i == len(args.rows) - 1
        rows.append(run_row_process(row, args, left if last and args.deadline else min(left, args.row_timeout)))
        print(_summary_line(rows[-1]), flush=True)
        result = report.assemble(rows, asdict(ANCHOR), gpu, run_id, tflops, GPU_SETTING, earlier)
        report.write(result, args.out)  # kept if the run is cut short
    return report.assemble(rows, asdict(ANCHOR), gpu, run_id, tflops, GPU_SETTING, earlier)


def _summary_line(row: dict) -> str:
    if "error" in row:
        return f"{row['row']:24s} error: {row['error']}"
    return (f"{row['row']:24s} {row['tokens_per_s'] / 1e3:7.1f}k tok/s  peak {row['peak_gib']:5.1f} GiB  "
            f"first {row['first_step_s']:6.1f} s  loss {row['loss_first']:.4f} -> {row['loss_last']:.4f}")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hgrn.bench.lm_step", description=__doc__.splitlines()[0])
    p.add_argument("--rows", nargs="+", default=None, choices=OURS + PEERS, help="default: all (--smoke: ours)")
    p.add_argument("--no-fla", action="store_true", help="leave out fla's row")
    p.add_argument("--profile", nargs="*", default=["ours-hgrn2-before", "ours-hgrn2"], help="rows to profile")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--deadline", type=float, help="seconds for all rows (the last may use all that is left)")
    p.add_argument("--row-timeout", type=float, default=900.0, help="seconds for one row (fla tunes for minutes)")
    p.add_argument("--cache-root", type=Path, help="per-row Triton/Inductor caches (default: a fresh temp dir)")
    p.add_argument("--out", type=Path, default=Path("results/bench"))
    p.add_argument(
        "--merge",
        type=Path,
        help="add this run's rows to an earlier result (JSON) of the same GPU "
        "(default: the day's file of this GPU under --out, if there is one)",
    )
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, our models, in this process")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--profile-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    rows = args.rows or [r for r in DEFAULT_ROWS if r in OURS or not args.smoke]
    args.rows = [r for r in rows if not (args.no_fla and r == "fla-hgrn2")]
    if args.merge and not args.merge.is_file():
        p.error(f"--merge {args.merge}: no such result file; give the JSON of an earlier run on this GPU")
    if args.smoke and set(args.rows) - set(OURS):
        p.error(f"--smoke runs our models only; drop {sorted(set(args.rows) - set(OURS))}")
    if not args.smoke and not args.worker and not torch.cuda.is_available():
        p.error("the anchor benchmark needs a CUDA GPU; use --smoke on a CPU")
    args.cache_root = args.cache_root or Path(tempfile.mkdtemp(prefix="hgrn-lm-step-"))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:  # one row, in the process run_row_process started
        shape, device = (SMOKE, "cpu") if args.smoke else (ANCHOR, "cuda")
        result = measure_row(args.worker, shape, device, args.steps, args.warmup, args.profile_worker)
        args.worker_out.write_text(json.dumps(result))
        return
    for path in report.write(run(args), args.out):
        print("wrote", path)


if __name__ == "__main__":
    main()
