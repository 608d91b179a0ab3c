"""What the MQAR study (Zoology's recipe, conf/recipe/mqar.yaml; `make mqar`) costs on this machine: real training
runs of a cell for a few hundred steps, `--concurrent` of them side by side as a study would run them, their steps
per second after the warm-up, and the GPU hours of the study at that rate -> results/bench/mqar-study-<device>-<date>.
{json,md}.

    python -m hgrn.bench.mqar_study --models hgrn2 attention --pairs 256:16 512:64 --d-model 128 \\
        --compile false blocks graphs --concurrent 1 6 --profile
    python -m hgrn.bench.mqar_study --trainer cpu --models attention --pairs 64:4 --d-model 16 --steps 12 \\
        --warmup 2 -- data.train_examples=512 data.test_examples=64     # a smoke run on the CPU

Each run is `python -m hgrn.train experiment=mqar/<model>` with trainer.max_steps (hgrn.bench.ddp_scaling's
command and StepLog). A run of the study is 64 epochs of 100,000 examples at Zoology's batch for its length, unless
validation accuracy passes 0.99 first (then the hours here are an upper bound); the study is every cell times
`--lrs` learning rates. HGRN2 takes `--expand-ratio` (Zoology's: min(d_model, 128)). `--profile` adds, per cell and
compile mode, the bare step outside Lightning (one batch of the recipe's data, forward + backward + optimiser,
synchronised median) and where its GPU time goes (torch.profiler): the difference to a run's step is the host's.
`--mps` runs the side-by-side runs under CUDA MPS (hgrn.jobs.mps_daemon), their kernels at once instead of in turns.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from hgrn.bench.ddp_scaling import run_training, summarise, train_command
from hgrn.bench.report import dated_record, write_dated
from hgrn.bench.step_profile import profile_steps
from hgrn.config import compose
from hgrn.jobs import mps_daemon
from hgrn.training.build import build_datamodule, build_task

MODELS = ("hgrn1", "hgrn2", "gla", "attention")


def cell_overrides(model: str, seq_len: int, kv_pairs: int, d_model: int, expand_ratio: int | None) -> list[str]:
    ratio = [f"model.mixer_options.expand_ratio={expand_ratio or min(d_model, 128)}"] if model == "hgrn2" else []
    return [f"data.seq_len={seq_len}", f"data.num_kv_pairs={kv_pairs}", f"model.d_model={d_model}", *ratio]


def steps_per_run(model: str, overrides: list[str]) -> int:
    """Optimiser steps of one full run of the recipe with these overrides (its epochs over its training set)."""
    cfg = compose(f"experiment=mqar/{model}", *overrides)
    return cfg.trainer.max_epochs * math.ceil(cfg.data.train_examples / cfg.data.batch_size)


def measure_cell(args: argparse.Namespace, model: str, overrides: list[str], compile: str, concurrent: int) -> dict:
    """`concurrent` identical runs side by side; each one's steps/s after the warm-up, and their sum."""
    work = args.work / time.strftime("%Y%m%d-%H%M%S") / f"{model}-{'-'.join(o.split('=')[1] for o in overrides)}"
    dirs = [work / f"{compile}-x{concurrent}-{i}" for i in range(concurrent)]
    extra = [*overrides, f"task.compile={compile}", *args.extra]
    commands = [train_command(f"mqar/{model}", args.trainer, 1, args.steps, d, extra) for d in dirs]
    with mps_daemon(work, args.mps), ThreadPoolExecutor(concurrent) as pool:
        list(pool.map(run_training, commands, dirs))
    rates = [summarise(d, args.warmup)["steps_per_s"] for d in dirs]
    return {"per_run_steps_per_s": rates, "steps_per_s": sum(rates)}


def profile_cell(model: str, overrides: list[str], compile: str, extra: list[str], steps: int = 20) -> dict:
    """The bare training step of a cell (its recipe's model, optimiser and a batch of its data; bf16 autocast on a
    GPU): synchronised median ms over `steps`, and where its GPU time goes."""
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    cfg = compose(f"experiment=mqar/{model}", *overrides, f"task.compile={compile}", "logger=none", *extra)
    cfg.data.train_examples = cfg.data.test_examples = cfg.data.batch_size  # generate one batch's worth
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    batch = {k: v.to(device) for k, v in next(iter(datamodule.train_dataloader())).items()}
    task = build_task(cfg, datamodule).to(device).train()
    optimizer = task.build_optimizer(bool(cfg.trainer.gradient_clip_val))  # as training builds it

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
            loss = task.shared_step(batch, "train")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = []
    for _ in range(steps + 3):  # 3 warm-up steps (compilation)
        started = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return {"bare_step_ms": 1e3 * statistics.median(times[3:]), "profile": profile_steps(step, cuda)}


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows, profiles = [], []
    for model in args.models:
        for pair in args.pairs:
            seq_len, kv_pairs = (int(x) for x in pair.split(":"))
            for d_model in args.d_model:
                overrides = cell_overrides(model, seq_len, kv_pairs, d_model, args.expand_ratio)
                steps = steps_per_run(model, [*overrides, *args.extra])
                for compile in args.compile:
                    if args.profile:
                        cell = {"model": model, "pair": pair, "d_model": d_model, "compile": compile}
                        profiles.append(cell | profile_cell(model, overrides, compile, args.extra))
                        print(f"{cell}: bare step {profiles[-1]['bare_step_ms']:.2f} ms", flush=True)
                    for concurrent in args.concurrent:
                        row = {"model": model, "pair": pair, "d_model": d_model, "overrides": overrides,
                               "compile": compile, "concurrent": concurrent, "mps": args.mps,
                               "steps_per_run": steps}  # fmt: skip
                        try:
                            row |= measure_cell(args, model, overrides, compile, concurrent)
                            row["study_gpu_hours"] = steps * args.lrs * args.cells / row["steps_per_s"] / 3600
                        except (RuntimeError, ValueError) as error:
                            row["error"] = str(error)
                        rows.append(row)
                        print(summary_line(row), flush=True)
    return rows, profiles


def summary_line(row: dict) -> str:
    cell = f"{row['model']} {row['pair']} d {row['d_model']} compile={row['compile']} x{side_by_side(row)}"
    if "error" in row:
        return f"{cell}: {row['error']}"
    each = " ".join(f"{r:.1f}" for r in row["per_run_steps_per_s"])
    return f"{cell}: {row['steps_per_s']:.1f} steps/s ({each}), study {row['study_gpu_hours']:.1f} GPU h"


def side_by_side(row: dict) -> str:
    return f"{row['concurrent']}{' (MPS)' if row.get('mps') else ''}"


def markdown(result: dict) -> str:
    args = result["arguments"]
    lines = [
        f"# MQAR study cost, {result['device']}, {result['date']}",
        "",
        f"`{result['command']}`: real training runs (`python -m hgrn.train experiment=mqar/<model>`, "
        f"trainer={args['trainer']}), {args['steps']} steps each, steps/s after {args['warmup']}. Study hours: one "
        f"run's steps x {args['lrs']} learning rates x {args['cells']} cells at the summed rate of the runs side by "
        "side (an upper bound where runs stop early above 0.99).",
        "",
        "| model | (T, kv) | d | compile | side by side | steps/s each | steps/s total | steps per run | study GPU h |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        head = f"| {r['model']} | {r['pair']} | {r['d_model']} | {r['compile']} | {side_by_side(r)} |"
        if "error" in r:
            lines.append(f"{head} {r['error'][:80]} | - | {r['steps_per_run']:,} | - |")
            continue
        each = ", ".join(f"{x:.1f}" for x in r["per_run_steps_per_s"])
        lines.append(f"{head} {each} | {r['steps_per_s']:.1f} | {r['steps_per_run']:,} | {r['study_gpu_hours']:.1f} |")
    for p in result.get("profiles", []):
        cell = f"{p['model']} {p['pair']} d {p['d_model']} compile={p['compile']}"
        lines += ["", f"## {cell}: bare step {p['bare_step_ms']:.2f} ms", "", p["profile"]]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    own, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=["hgrn2", "attention"])
    parser.add_argument("--pairs", nargs="+", default=["256:16", "512:64"], help="seq_len:num_kv_pairs")
    parser.add_argument("--d-model", nargs="+", type=int, default=[128])
    parser.add_argument("--expand-ratio", type=int, help="HGRN2's (default: min(d_model, 128), as Zoology)")
    parser.add_argument("--compile", nargs="+", default=["false"], help="task.compile values to compare")
    parser.add_argument("--concurrent", nargs="+", type=int, default=[1], help="runs side by side")
    parser.add_argument("--steps", type=int, default=400, help="optimiser steps of each run")
    parser.add_argument("--warmup", type=int, default=100, help="steps left out of steps/s (compilation)")
    parser.add_argument("--lrs", type=int, default=3, help="learning rates per cell in the study")
    parser.add_argument("--cells", type=int, default=17, help="cells of the study at this (T, kv) (issue 18: 17)")
    parser.add_argument("--trainer", default="gpu")
    parser.add_argument("--profile", action="store_true", help="also each cell's bare step and its GPU kernels")
    parser.add_argument("--mps", action="store_true", help="the runs side by side under CUDA MPS (not with --profile)")
    parser.add_argument("--work", type=Path, default=Path("outputs/mqar-study"), help="where the runs go")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(own)
    if args.steps <= args.warmup + 1:
        parser.error(f"--steps {args.steps} must exceed --warmup {args.warmup} + 1")
    if args.mps and args.profile:
        parser.error("--mps with --profile: the profile's CUDA context in this process would bypass MPS: run apart")
    if min(args.concurrent) < 1:
        parser.error(f"--concurrent {' '.join(map(str, args.concurrent))}: each must be at least 1")
    bad = [p for p in args.pairs if len(p.split(":")) != 2 or not all(x.isdigit() for x in p.split(":"))]
    if bad:
        parser.error(f"--pairs {' '.join(bad)}: write each as seq_len:num_kv_pairs, e.g. 256:16")
    args.extra = extra
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    rows, profiles = run(args)
    arguments = {k: v for k, v in vars(args).items() if k not in ("work", "out")}
    result = dated_record("mqar-study", "python -m hgrn.bench.mqar_study " + " ".join(argv), rows=rows,
                          profiles=profiles, arguments=arguments)  # fmt: skip
    text = markdown(result)
    print(text)
    write_dated(result, text, args.out, "mqar-study")


if __name__ == "__main__":
    main()
