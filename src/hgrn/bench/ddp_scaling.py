"""Data-parallel scaling of one experiment: the same training on one device and on N, at the same global batch and
seed, then throughput, scaling efficiency, the two loss curves side by side, peak memory per process and how far the
test metrics are apart (each example is counted once over all ranks, so they differ by rounding only)
-> results/bench/ddp-scaling-<device>-<date>.{json,md}.

    python -m hgrn.bench.ddp_scaling --experiment lra/hgrn2/listops --devices 2 --steps 400
    python -m hgrn.bench.ddp_scaling --experiment lm/ptb/hgrn2 --devices 2 --steps 300 -- data.num_workers=4
    python -m hgrn.bench.ddp_scaling --experiment lm/pile/hgrn2-1b --trainer fsdp --devices 2 --steps 10 --no-baseline
    python -m hgrn.bench.ddp_scaling --experiment demo --trainer ddp_cpu --baseline-trainer cpu --global-batch 16 \
        --steps 20 --warmup 5                          # two gloo processes on the CPU
    python -m hgrn.bench.ddp_scaling --experiment lra/hgrn2/listops --devices 1 --steps 400   # the one-GPU row only

Each run is `python -m hgrn.train` (Lightning starts the other ranks) with trainer.max_steps, no logger, and the
StepLog callback, which records every optimiser step's loss over the global batch (the mean of the ranks' means) and
its wall-clock time on rank 0. Steps per second are measured after `--warmup` steps (kernel compilation, cuDNN
tuning, data-loader start), so efficiency = N-device steps/s / (N x one-device steps/s) at the same global batch.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from hgrn.bench.report import dated_base, dated_record, write_dated
from hgrn.jobs import console_log, train_process
from hgrn.results import load_record


class StepLog(L.Callback):
    """Rank 0 writes to `path`, at the end of fit, one row per optimiser step: the training loss over the global
    batch (the mean over ranks of each rank's mean over its micro-batches) and the time the step ended. The losses
    stay on the device until the end, so the log adds no host read to a step (one small all-gather only)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.losses: dict[int, list[torch.Tensor]] = {}
        self.times: dict[int, float] = {}
        self.stepped = 0  # optimiser steps taken when the last micro-batch ended

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stepped = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any) -> None:
        # the optimiser step this micro-batch belongs to: global_step has already advanced if it ended one
        step = trainer.global_step if trainer.global_step > self.stepped else trainer.global_step + 1
        self.stepped = trainer.global_step
        self.losses.setdefault(step, []).append(pl_module.all_gather(outputs["loss"].detach()).float().mean())
        self.times[step] = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            rows = [
                {"step": step, "loss": float(torch.stack(losses).mean()), "time": self.times[step]}
                for step, losses in sorted(self.losses.items())
            ]
            self.path.write_text(json.dumps(rows))


def train_command(
    experiment: str, trainer: str, devices: int, steps: int, run_dir: Path, extra: list[str]
) -> list[str]:
    """The `python -m hgrn.train` command line of one run; its step log lands in run_dir/steps.json."""
    log = f"+callbacks.step_log={{_target_: hgrn.bench.ddp_scaling.StepLog, path: '{run_dir / 'steps.json'}'}}"
    return [
        sys.executable,
        "-m",
        "hgrn.train",
        f"experiment={experiment}",
        f"trainer={trainer}",
        f"trainer.devices={devices}",
        f"trainer.max_steps={steps}",
        "logger=none",
        f"hydra.run.dir={run_dir}",
        log,
        *(["~callbacks.progress"] if "~callbacks.progress" not in extra else []),  # no progress bar in the log
        *extra,
    ]


def failure_line(log: str) -> str:
    """The line of a failed run's console that says why: the last one naming an error (Hydra's and the shutdown's
    closing lines come after it), else the last line."""
    lines = log.strip().splitlines() or ["(no output)"]
    named = [line for line in lines if re.search(r"\w(Error|Exception)\b|^error:", line.strip())]
    return (named or lines)[-1].strip()


def run_training(command: list[str], run_dir: Path) -> None:
    """Run one training, its output in hgrn.jobs.console_log (beside the run); a failure raises naming that log and
    the line that says why."""
    print(" ".join(command[2:]), flush=True)
    code = train_process(command, run_dir)
    if code != 0:
        console = console_log(run_dir)
        why = failure_line(console.read_text(errors="replace"))
        raise RuntimeError(f"training exited with {code} ({console}): {why}")


def summarise(run_dir: Path, warmup: int) -> dict[str, Any]:
    """What one run measured: steps/s and examples/s after `warmup` steps, the loss per step, peak memory per
    process (GiB) and the test metrics of its last weights."""
    record = load_record(run_dir / "results.json")
    rows = json.loads((run_dir / "steps.json").read_text())
    if len(rows) <= warmup + 1:
        raise ValueError(f"{run_dir}: {len(rows)} steps logged; run more than --warmup {warmup} + 1 steps")
    start, end = rows[warmup], rows[-1]
    steps_per_s = (end["step"] - start["step"]) / (end["time"] - start["time"])
    batch = record.config["effective"]["batch_size"]
    peaks = record.peak_memory_bytes_per_process or [record.peak_memory_bytes]
    seen = record.throughput  # over all step time: its tokens per example (padding excluded), not its rate
    tokens_per_example = seen.get("train_tokens_per_s", 0.0) / seen["train_samples_per_s"]
    return {
        "world_size": record.config["effective"]["world_size"],
        "global_batch": batch,
        "steps": record.steps,
        "steps_per_s": steps_per_s,
        "examples_per_s": steps_per_s * batch,
        "tokens_per_s": steps_per_s * batch * tokens_per_example,
        "peak_memory_gib": [p / 2**30 for p in peaks],
        "losses": [row["loss"] for row in rows],
        "test": record.metrics_last,
    }


def compare(one: dict[str, Any], many: dict[str, Any], first: int = 10) -> dict[str, Any]:
    """Scaling efficiency and how far the N-device loss curve is from the one-device curve (same batches)."""
    if one["global_batch"] != many["global_batch"]:
        raise ValueError(
            f"global batch {one['global_batch']} on one device but {many['global_batch']} on {many['world_size']}: "
            "this experiment's data.batch_size is per process; pass --global-batch"
        )
    pairs = list(zip(one["losses"], many["losses"], strict=False))
    tested = one["test"].keys() & many["test"].keys()
    return {
        "efficiency": many["steps_per_s"] / (many["world_size"] * one["steps_per_s"]),
        "loss_max_abs_diff_first": max(abs(a - b) for a, b in pairs[:first]),
        "loss_max_abs_diff_all": max(abs(a - b) for a, b in pairs),
        "first": first,
        "test_max_abs_diff": max((abs(one["test"][k] - many["test"][k]) for k in tested), default=None),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Data-parallel scaling: {result['device']}, {result['date']}",
        "",
        "Same experiment, seed and global batch on one device and on N; steps/s after the warm-up steps; memory is "
        "each process's peak (torch.cuda.max_memory_allocated; on the CPU its resident set).",
        "",
        "| experiment | trainer | devices | global batch | steps/s | examples/s | tokens/s | efficiency "
        "| peak GiB per process | max loss diff (first steps / all) | max test metric diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in result["rows"]:
        for which in ("one", "many"):
            run = entry.get(which)
            if run is None:
                continue
            scaling = entry.get("comparison") if which == "many" else None
            cells = [
                entry["experiment"],
                entry["baseline_trainer"] if which == "one" else entry["trainer"],
                str(run["world_size"]),
                str(run["global_batch"]),
                f"{run['steps_per_s']:.2f}",
                f"{run['examples_per_s']:,.0f}",
                f"{run['tokens_per_s']:,.0f}",
                f"{scaling['efficiency']:.2f}" if scaling else "-",
                ", ".join(f"{p:.2f}" for p in run["peak_memory_gib"]),
                _loss_gap(scaling),
                _test_gap(scaling),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Loss over the global batch, first steps (one device / N devices):", ""]
    for entry in result["rows"]:
        one, many = entry.get("one"), entry.get("many")
        runs = [run for run in (one, many) if run is not None]
        shown = range(min(10, *(len(run["losses"]) for run in runs)))
        values = [" / ".join(f"{run['losses'][i]:.5f}" for run in runs) for i in shown]
        trainer = entry["trainer"] if many else f"{entry['baseline_trainer']}, one device only"
        lines.append(f"- {entry['experiment']} ({trainer}): " + ", ".join(values))
    lines += ["", "Commands:", ""] + [f"- `{entry['command']}`" for entry in result["rows"]]
    return "\n".join(lines) + "\n"


def _loss_gap(scaling: dict[str, Any] | None) -> str:
    if scaling is None:
        return "-"
    return f"{scaling['loss_max_abs_diff_first']:.2e} / {scaling['loss_max_abs_diff_all']:.2e}"


def _test_gap(scaling: dict[str, Any] | None) -> str:
    gap = None if scaling is None else scaling["test_max_abs_diff"]
    return "-" if gap is None else f"{gap:.2e}"


def measure(args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """Run the N-device training (and the one-device baseline) and compare them."""
    work = args.work / time.strftime("%Y%m%d-%H%M%S")
    entry: dict[str, Any] = {
        "experiment": args.experiment,
        "trainer": args.trainer,
        "baseline_trainer": args.baseline_trainer,
        "overrides": extra,
    }
    runs = [(args.trainer, args.devices, "many")] if args.devices > 1 else []
    runs += [(args.baseline_trainer, 1, "one")] if args.baseline else []
    for trainer, devices, which in runs:
        run_dir = work / f"{devices}-device"
        batch = [] if args.global_batch is None else [f"data.batch_size={args.global_batch // devices}"]
        run_training(train_command(args.experiment, trainer, devices, args.steps, run_dir, extra + batch), run_dir)
        entry[which] = summarise(run_dir, args.warmup)
    if "one" in entry and "many" in entry:
        entry["comparison"] = compare(entry["one"], entry["many"])
    return entry


def merged_rows(out_dir: Path, result: dict[str, Any], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of today's file for this device (one per experiment and trainer, each measured by its own command),
    with `entry` added or replacing the row it measures again."""
    path = dated_base(result, out_dir, "ddp-scaling").with_suffix(".json")
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    same = (entry["experiment"], entry["trainer"])
    return [row for row in rows if (row["experiment"], row["trainer"]) != same] + [entry]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="e.g. lra/hgrn2/listops, lm/ptb/hgrn2")
    parser.add_argument(
        "--devices",
        type=int,
        default=2,
        help="1: only the one-device baseline, the row a later "
        "N-device run is compared with (where N devices are not to be had)",
    )
    parser.add_argument("--trainer", default="ddp", help="the N-device trainer config: ddp, fsdp or ddp_cpu")
    parser.add_argument("--baseline-trainer", default="gpu", help="the one-device trainer config (cpu for ddp_cpu)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false", help="N devices only (FSDP at 1B)")
    parser.add_argument(
        "--global-batch",
        type=int,
        help="set data.batch_size to this / devices (default: the recipe's, which divides "
        "its total batch over the processes)",
    )
    parser.add_argument("--steps", type=int, default=400, help="optimiser steps of each run")
    parser.add_argument("--warmup", type=int, default=50, help="steps left out of steps/s")
    parser.add_argument("--work", type=Path, default=Path("outputs/ddp-scaling"), help="where the runs go")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(own)
    if args.devices < 1 or (args.devices == 1 and not args.baseline):
        parser.error(f"--devices {args.devices}: give 2 or more devices, or 1 for the baseline alone")
    if args.global_batch is not None and args.global_batch % args.devices:
        parser.error(f"--global-batch {args.global_batch} does not divide over {args.devices} devices")
    if args.steps <= args.warmup + 1:
        parser.error(f"--steps {args.steps} must exceed --warmup {args.warmup} + 1")
    entry = measure(args, extra)
    entry["command"] = "python -m hgrn.bench.ddp_scaling " + " ".join(argv)
    result = dated_record("ddp-scaling", entry["command"], rows=[entry])
    result["rows"] = merged_rows(args.out, result, entry)
    text = markdown(result)
    print(text)
    write_dated(result, text, args.out, "ddp-scaling", replace=True)


if __name__ == "__main__":
    main()
