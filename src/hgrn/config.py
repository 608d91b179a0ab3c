"""The one home of configuration: where the Hydra configs live, the resolvers they use, the error a bad config raises,
and composition for code that builds runs without the command line (benchmarks, tests, notebooks).

Every compose imports this module, so the `div` resolver is registered exactly once, here.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"


class ConfigError(ValueError):
    """A config problem, reported by its full key."""


def divide_exactly(total: int, parts: int) -> int:
    """`${div:128,${trainer.devices}}`: a total batch split over devices, which must divide it."""
    if parts < 1 or total % parts:
        raise ConfigError(f"cannot split {total} evenly over {parts} devices; choose a device count that divides it")
    return total // parts


OmegaConf.register_new_resolver("div", divide_exactly)


def group_options(group: str) -> list[str]:
    """The selectable options of a config group, e.g. group_options("experiment") -> ["demo", "lra/gla/image", ...]."""
    root = CONFIG_DIR / group
    return sorted(str(path.relative_to(root).with_suffix("")) for path in root.rglob("*.yaml"))


def compose(*overrides: str, config_name: str = "train") -> DictConfig:
    """The config `python -m hgrn.<config_name> <overrides>` would run with (outside a Hydra run, so
    `paths.output_dir` must be among the overrides if anything resolves it)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    check_overrides(overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides))


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
def exit_on_user_error() -> Iterator[None]:
    """Errors that are the user's to fix (config, data, a diverged loss) print one line and exit with status 2."""
    from hgrn.data.errors import DataNotFoundError

    try:
        yield
    except (ConfigError, DataNotFoundError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def main_with_checked_overrides(hydra_main: Callable[[], object]) -> None:
    """Run a `@hydra.main` function after `check_overrides` has read the command line."""
    with exit_on_user_error():
        check_overrides(sys.argv[1:])
    hydra_main()
