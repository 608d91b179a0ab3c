"""Loggers the `logger` config group builds, where Lightning's own need a change."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import loggers


class WandbLogger(loggers.WandbLogger):
    """Lightning's W&B logger without the `anonymous` argument it hands wandb.init on every run (None unless asked
    for), which wandb 0.31 answers with a warning that the setting has no effect, on every run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "anonymous" in self._wandb_init and self._wandb_init["anonymous"] is None:
            del self._wandb_init["anonymous"]
