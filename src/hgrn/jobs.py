"""Run a list of trainings N at a time, each in a directory of its own, so that a list too long for one sitting
continues where it stopped (a GPU lent in slices, a job queue's time limit):

    python -m hgrn.jobs JOBS --concurrent 8 --max-time 00:00:09:00 --work outputs/mqar-study

JOBS is a file of `python -m hgrn.train` command lines without the program, one per line (`#` starts a comment,
quotes group as in a shell), with Hydra's sweep syntax: `experiment=mqar/hgrn2 data.seq_len=256 optim.lr=1e-4,1e-3`
is two jobs. A job's directory is named by its overrides. A job whose results.json says it finished is done; one
with a step checkpoint resumes from it (`resume=<its directory>`); the others start. `--max-time` is each process's
time for fitting (`trainer.max_time`: the run then checkpoints, tests and writes results.json unfinished, and the
next call resumes it); a job that failed is left until `--retry-failed` (<directory>.failed says why); no job starts
later than `--deadline` seconds after the call began. `--end` is a wall-clock limit for the whole call (a job
queue's, a lent GPU's): a job started late gets the smaller of `--max-time` and the time left, so every stretch stops
fitting by then and is resumed by the next call. Each job's console output is appended to <directory>.log
beside it. The runs are ordinary runs: `make tables` reads their results.json. `--mps` runs them under CUDA MPS
(`mps_daemon`): small models' kernels leave most of the GPU idle, and MPS lets the kernels of the processes side by
side run at once where the GPU's time slices would otherwise take them in turn (one such runner per GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

from hydra.core.override_parser.overrides_parser import OverridesParser

from hgrn.results import load_record
from hgrn.training.callbacks import duration_seconds


def expand(line: str) -> list[list[str]]:
    """The jobs of one line: the Cartesian product of its sweep overrides (Hydra's `key=a,b` and range syntax)."""
    overrides = OverridesParser.create().parse_overrides(shlex.split(line))
    choices = [
        [f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [o.input_line]
        for o in overrides
    ]
    return [list(job) for job in itertools.product(*choices)]


def read_jobs(path: Path) -> list[list[str]]:
    """Every job of the file, in order, each once."""
    jobs: list[list[str]] = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        jobs += [job for job in expand(line) if job not in jobs] if line else []
    return jobs


def job_dir(work: Path, job: list[str]) -> Path:
    """work/<the overrides, made a file name>; past 120 characters its first and last 50 and a digest of the whole."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(job)).strip("-")
    if len(name) > 120:
        name = f"{name[:50]}--{name[-50:]}-{hashlib.sha1(' '.join(job).encode()).hexdigest()[:10]}"
    return work / name


def failure_note(run_dir: Path) -> Path:
    """<directory>.failed: why the job's last stretch failed (it is not run again until --retry-failed)."""
    return run_dir.with_name(f"{run_dir.name}.failed")


def state(run_dir: Path) -> str:
    """'done' (results.json says finished), 'failed' (failure_note), 'resume' (a step checkpoint exists) or
    'start'."""
    results = run_dir / "results.json"
    if results.is_file() and load_record(results).finished:
        return "done"
    if failure_note(run_dir).is_file():
        return "failed"
    return "resume" if any(run_dir.glob("checkpoints/*.ckpt")) else "start"


def console_log(run_dir: Path) -> Path:
    """<directory>.log, beside the run: a run that fails before its first checkpoint removes its own directory."""
    return run_dir.with_name(f"{run_dir.name}.log")


def train_process(command: list[str], run_dir: Path) -> int:
    """Run a `python -m hgrn.train` command line for `run_dir`, its output appended to console_log; the exit status."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with console_log(run_dir).open("a") as out:
        return subprocess.call(command, stdout=out, stderr=subprocess.STDOUT)


def stretch_limit(max_time: str | None, seconds_left: float) -> str | None:
    """The next stretch's trainer.max_time: max_time, or the whole seconds left before --end where fewer."""
    if seconds_left == float("inf"):
        return max_time
    limit = int(seconds_left) if max_time is None else min(int(duration_seconds(max_time)), int(seconds_left))
    days, rest = divmod(limit, 86400)
    return f"{days:02d}:{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


def command(job: list[str], run_dir: Path, max_time: str | None, resume: bool) -> list[str]:
    """The job's next `python -m hgrn.train`: in its directory, resuming it from its checkpoints (resume)."""
    resumed = [f"resume={run_dir}"] if resume else []
    limit = [f"trainer.max_time={max_time}"] if max_time else []
    return [sys.executable, "-m", "hgrn.train", *job, f"hydra.run.dir={run_dir}", *resumed, *limit]


def run(job: list[str], run_dir: Path, max_time: str | None, resume: bool) -> str:
    """Run the job's next stretch; its state afterwards, or 'failed (exit status N)'."""
    code = train_process(command(job, run_dir, max_time, resume), run_dir)
    if code != 0:
        failure_note(run_dir).write_text(f"exit status {code}; its output is in {console_log(run_dir)}\n")
        return f"failed (exit status {code})"
    return state(run_dir)


@contextlib.contextmanager
def mps_daemon(root: Path, enabled: bool = True) -> Iterator[None]:
    """CUDA MPS for the processes started inside: an MPS control daemon with its pipes and logs under root
    (root/mps-pipe, root/mps-log, named to child processes through CUDA_MPS_PIPE_DIRECTORY / _LOG_DIRECTORY), quit
    on the way out; nothing when not enabled (the callers' --mps). Start it before this process touches CUDA: a
    context made earlier does not go through MPS."""
    if not enabled:
        yield
        return
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        raise SystemExit("--mps: nvidia-cuda-mps-control is not on PATH (it comes with the driver); run without --mps")
    pipes, logs = root / "mps-pipe", root / "mps-log"
    for path in (pipes, logs):
        path.mkdir(parents=True, exist_ok=True)
    with mock.patch.dict(os.environ, {"CUDA_MPS_PIPE_DIRECTORY": str(pipes), "CUDA_MPS_LOG_DIRECTORY": str(logs)}):
        if subprocess.run([control, "-d"], stdin=subprocess.DEVNULL).returncode != 0:
            raise SystemExit(
                f"--mps: {control} -d failed: is an MPS daemon already running for {pipes}? (`echo quit | "
                f"CUDA_MPS_PIPE_DIRECTORY={pipes} nvidia-cuda-mps-control` stops it), or run without --mps"
            )
        try:
            yield
        finally:
            subprocess.run([control], input="quit\n", text=True, check=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", type=Path, help="a file of python -m hgrn.train override lines")
    parser.add_argument("--work", type=Path, required=True, help="where each job's directory goes")
    parser.add_argument("--concurrent", type=int, default=1, help="jobs side by side")
    parser.add_argument("--max-time", help="each process's fitting time, DD:HH:MM:SS (trainer.max_time)")
    parser.add_argument("--deadline", type=float, default=float("inf"), help="seconds after which no job starts")
    parser.add_argument(
        "--end", type=float, default=float("inf"), help="seconds after which every stretch has stopped fitting"
    )
    parser.add_argument("--retry-failed", action="store_true", help="run the jobs whose last stretch failed again")
    parser.add_argument("--mps", action="store_true", help="run them under CUDA MPS (kernels side by side at once)")
    args = parser.parse_args(argv)
    if not args.jobs.is_file():
        parser.error(f"{args.jobs}: no such file; write one line of python -m hgrn.train overrides per job")
    if args.concurrent < 1:
        parser.error(f"--concurrent {args.concurrent}: at least 1")
    if args.max_time is not None:
        try:
            duration_seconds(args.max_time)
        except ValueError as error:
            parser.error(f"--max-time: {error}")
    jobs = [(job, job_dir(args.work, job)) for job in read_jobs(args.jobs)]
    if args.retry_failed:
        for _, run_dir in jobs:
            failure_note(run_dir).unlink(missing_ok=True)
    states = [state(run_dir) for _, run_dir in jobs]
    todo = [(job, run_dir, now == "resume") for (job, run_dir), now in zip(jobs, states, strict=True)
            if now in ("start", "resume")]  # fmt: skip
    failed = f", {states.count('failed')} failed before (--retry-failed runs them again)" if "failed" in states else ""
    print(f"{len(jobs)} jobs: {states.count('done')} done{failed}, {len(todo)} to run ({args.concurrent} at a time)")
    started = time.monotonic()

    def next_stretch(item: tuple[list[str], Path, bool]) -> str:
        job, run_dir, resume = item
        elapsed = time.monotonic() - started
        if elapsed > min(args.deadline, args.end):
            return "not started (deadline)"
        outcome = run(job, run_dir, stretch_limit(args.max_time, args.end - elapsed), resume)
        print(f"{run_dir.name}: {outcome}", flush=True)
        return outcome

    with mps_daemon(args.work, args.mps), ThreadPoolExecutor(args.concurrent) as pool:
        outcomes = list(pool.map(next_stretch, todo))
    counts = {outcome: outcomes.count(outcome) for outcome in dict.fromkeys(outcomes)}
    print("; ".join(f"{n} {outcome}" for outcome, n in counts.items()) or "nothing to run")
    if any(outcome.startswith("failed") for outcome in outcomes):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
