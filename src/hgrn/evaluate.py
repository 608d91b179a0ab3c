"""The evaluation entry point: a checkpoint and an experiment's data -> the task's test metrics -> evaluation.json.

python -m hgrn.evaluate experiment=lra/hgrn2/listops ckpt_path=<run dir>/checkpoints/best.ckpt
python -m hgrn.evaluate experiment=demo ckpt_path=<checkpoint> data.data_dir=<other data>
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from hgrn.config import CONFIG_DIR, exit_on_user_error, main_with_checked_overrides
from hgrn.training.run import evaluate


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def _run(cfg: DictConfig) -> None:
    with exit_on_user_error(run_dir=cfg.paths.output_dir):
        evaluate(cfg)


def main() -> None:
    main_with_checked_overrides(_run, "eval")


if __name__ == "__main__":
    main()
