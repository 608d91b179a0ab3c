"""The training entry point: compose the config, then hgrn.training.run.train (fit, test at the best validation
checkpoint, results.json).

    python -m hgrn.train experiment=lra/hgrn2/listops model.n_layers=4
    hgrn-train -m experiment=mqar/hgrn2 optim.lr=1e-4,5e-4,1e-3        # Hydra multirun sweep
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from hgrn.config import CONFIG_DIR, exit_on_user_error, main_with_checked_overrides
from hgrn.training.run import train


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _run(cfg: DictConfig) -> float | None:
    with exit_on_user_error(run_dir=cfg.paths.output_dir):
        result = train(cfg)
    return result.metrics.get(f"{cfg.task.get('monitor', 'val/loss')}_best")  # what a Hydra sweeper optimises


def main() -> None:
    main_with_checked_overrides(_run, "train")


if __name__ == "__main__":
    main()
