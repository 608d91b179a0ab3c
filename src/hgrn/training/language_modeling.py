"""Next-token prediction with labels [B, T] (-100 = nothing to predict): language modeling and MQAR.

Reports loss, perplexity and the accuracy over labelled positions (MQAR's metric)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from hgrn.models import CausalLM, CausalLMConfig
from hgrn.training.base import OptimizerFactory, ScheduleFactory, TaskModule

IGNORE = -100


class LanguageModelingTask(TaskModule):
    def __init__(
        self,
        backbone: dict[str, Any],
        data: dict[str, Any],
        optim: OptimizerFactory,
        sched: ScheduleFactory | None = None,
        tie_embeddings: bool = True,
        monitor: str = "val/loss",
        monitor_mode: str = "min",
    ) -> None:
        super().__init__(optim, sched, monitor, monitor_mode)
        self.save_hyperparameters(ignore=["optim", "sched"])
        vocab = data["vocab_size"]
        self.model = CausalLM(CausalLMConfig(backbone=backbone, vocab_size=vocab, tie_embeddings=tie_embeddings))
        self.add_split_metrics("acc", lambda: MulticlassAccuracy(vocab, average="micro", ignore_index=IGNORE))
        self.add_split_metrics("loss", MeanMetric)

    def shared_step(self, batch: dict[str, Tensor], split: str) -> Tensor:
        logits = self.model(batch["inputs"])
        logits, labels = logits.flatten(0, 1), batch["labels"].flatten()
        loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE)
        self.log_loss_and_accuracy(split, loss, logits, labels, weight=(labels != IGNORE).sum())
        return loss

    def on_validation_epoch_end(self) -> None:
        self.log("val/ppl", self.val_loss.compute().exp())

    def on_test_epoch_end(self) -> None:
        self.log("test/ppl", self.test_loss.compute().exp())
