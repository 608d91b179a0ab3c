"""The one home of configuration: where the Hydra configs live, the resolvers they use, the error a bad config raises,
and composition for code that builds runs without the command line (benchmarks, tests, notebooks).

Every compose imports this module, so the `div` and `lookup` resolvers are registered exactly once, here.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout, suppress
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).parent / "conf"  # the repo's conf/ (src/hgrn/conf links to it), installed with the package


class ConfigError(ValueError):
    """A config problem, reported by its full key."""


def divide_exactly(total: int, *counts: int) -> int:
    """`${div:128,${trainer.devices},${trainer.num_nodes}}`: a recipe's total batch split over every process (devices
    per host x hosts), which must divide it."""
    parts = math.prod(counts)
    if parts < 1 or total % parts:
        raise ConfigError(f"cannot split {total} evenly over {parts} processes; choose devices x nodes that divide it")
    return total // parts


def look_up(key: Any, table: dict) -> Any:
    """`${lookup:${.seq_len},{64: 512, 128: 512, 256: 256, 512: 64}}`: a value chosen by another, as an official
    recipe that picks its batch by sequence length."""
    if key not in table:
        raise ConfigError(f"no value for {key!r} in {table}; give the value itself or one of the keys {list(table)}")
    return table[key]


OmegaConf.register_new_resolver("div", divide_exactly)
OmegaConf.register_new_resolver("lookup", look_up)


def group_options(group: str) -> list[str]:
    """The selectable options of a config group, e.g. group_options("experiment") -> ["demo", "lra/gla/image", ...]."""
    root = CONFIG_DIR / group
    return sorted(str(path.relative_to(root).with_suffix("")) for path in root.rglob("*.yaml"))


def compose(*overrides: str, config_name: str = "train") -> DictConfig:
    """The config `python -m hgrn.<config_name> <overrides>` would run with (outside a Hydra run, so
    `paths.output_dir` must be among the overrides if anything resolves it)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    check_overrides(overrides)
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return hydra_compose(config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as error:  # one line, not Hydra's page
        raise ConfigError(_one_line(error)) from None


def _one_line(error: Exception) -> str:
    """Hydra's first line, with its hint of how to add a key that is not in the config (when it gives one)."""
    from hydra.errors import OverrideParseException

    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if isinstance(error, OverrideParseException):
        return f"an override does not parse ({lines[0]}); write key=value, e.g. optim.lr=1e-3 or model.grid=[32,32]"
    hint = [line for line in lines[1:2] if line.startswith("To append")]
    return " ".join(lines[:1] + hint)


_GROUP_OVERRIDE = re.compile(r"^[+~]*(?P<key>experiment|recipe)(@[\w.]+)?=(?P<value>.*)$")


def check_overrides(overrides: Sequence[str]) -> None:
    """Refuse, in one line, what Hydra would answer with a page: an unknown experiment, or a recipe selected as a run.

    Recipes (conf/recipe/) hold a benchmark's data, task, optimiser, schedule and trainer; they are included by
    experiments, which add the model, and never run alone.
    """
    experiments = group_options("experiment")
    for override in overrides:
        match = _GROUP_OVERRIDE.match(override)
        if match is None:
            continue
        if match["key"] == "recipe":
            raise ConfigError(
                f"{override!r}: recipes (conf/recipe/) are parts of experiments, not runs; choose experiment=<name> "
                f"(python -m hgrn.train --help lists them)"
            )
        for value in match["value"].split(","):  # a multirun sweeps over comma-separated experiments
            if value in experiments or value in ("", "null"):
                continue
            recipe = value.replace("/recipe/", "/").removeprefix("recipe/")
            if "recipe" in value and recipe in group_options("recipe"):
                raise ConfigError(
                    f"experiment={value} is a recipe (conf/recipe/{recipe}.yaml), not an experiment; run one that "
                    f"adds a model to it, e.g. experiment={_experiments_with_recipe(recipe, experiments)}"
                )
            close = difflib.get_close_matches(value, experiments, n=3)
            hint = f"did you mean {' or '.join(close)}?" if close else "see conf/experiment/"
            raise ConfigError(f"experiment={value} does not exist; {hint}")


def _experiments_with_recipe(recipe: str, experiments: list[str]) -> str:
    benchmark, _, task = recipe.rpartition("/")
    matches = [e for e in experiments if e.startswith(benchmark + "/") and e.endswith("/" + task)] or experiments
    return matches[0]


@contextmanager
def exit_on_user_error(run_dir: str | Path | None = None) -> Iterator[None]:
    """Errors that are the user's to fix (config, data, a diverged loss) print one line and exit with status 2; a run
    that stopped so before saving any checkpoint leaves no run directory behind (`discard_unstarted_run`)."""
    from hgrn.data.errors import DataNotFoundError

    try:
        yield
    except (ConfigError, DataNotFoundError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        if run_dir is not None:
            discard_unstarted_run(Path(run_dir))
        raise SystemExit(2) from None


def discard_unstarted_run(run_dir: Path) -> None:
    """Remove the directory of a run that failed before it saved a checkpoint (Hydra's config copy, an empty log, an
    offline W&B run with nothing to sync), and its parents that are left empty. A run with a checkpoint is kept."""
    if not run_dir.is_dir() or any(run_dir.rglob("*.ckpt")):
        return
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:  # close it quietly: its "wandb sync" hint would name a deleted run
        with open(os.devnull, "w") as devnull, redirect_stdout(devnull), redirect_stderr(devnull):
            wandb.finish()
    shutil.rmtree(run_dir, ignore_errors=True)
    with suppress(OSError):
        os.removedirs(run_dir.parent)  # stops at the first parent that is not empty


def main_with_checked_overrides(hydra_main: Callable[[], object], config_name: str) -> None:
    """Run a `@hydra.main` function once the command line's overrides are known to compose (a mistyped key or value
    is then one line, before Hydra creates a run directory); sweeps (-m) are composed by Hydra per job."""
    argv = sys.argv[1:]
    overrides = [a for a in argv if not a.startswith("-") and not a.startswith("hydra.")]
    with exit_on_user_error():
        check_overrides(overrides)
        if not {"-m", "--multirun"} & set(argv):
            compose(*overrides, config_name=config_name)
    hydra_main()
