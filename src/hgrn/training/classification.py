"""One label per sequence: LRA tasks (and sequence-level probes). Reports accuracy; LRA's number is test accuracy
at the best validation checkpoint."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from hgrn.models import SequenceClassifier, SequenceClassifierConfig
from hgrn.training.base import (
    OptimizerFactory,
    ScheduleFactory,
    TaskModule,
    WeightedMean,
    accuracy_metric,
    compile_model,
)


class ClassificationTask(TaskModule):
    """backbone: BackboneConfig fields; data: what the datamodule tells the head (num_classes, vocab_size or
    input_dim, max_length, pair). The head's own knobs (hgrn.models.SequenceClassifierConfig):

    positional: add position information ('position' encoder), as position_encoding says: 'sinusoidal' (fixed,
        then Dropout(position_dropout), the official LRA encoder) or 'learned';
    init_std: N(0, init_std) initialisation, or None for PyTorch's defaults (the official LRA models);
    mask_padding: False lets the scans run over the padding, as the official LRA code does.
    compile: false, 'parts', 'blocks' or 'graphs' (hgrn.training.base.compile_model); the first step then compiles,
        and each new padded length once more until Dynamo marks it dynamic.
    """

    def __init__(
        self,
        backbone: dict[str, Any],
        data: dict[str, Any],
        optim: OptimizerFactory,
        sched: ScheduleFactory | None = None,
        pooling: str = "mean",
        positional: bool = False,
        position_encoding: str = "learned",
        position_dropout: float = 0.1,
        init_std: float | None = 0.02,
        mask_padding: bool = True,
        label_smoothing: float = 0.0,
        compile: bool | str = False,
        monitor: str = "val/acc",
        monitor_mode: str = "max",
        fp32_evaluation: bool = False,
    ) -> None:
        super().__init__(optim, sched, monitor, monitor_mode, fp32_evaluation)
        self.save_hyperparameters(ignore=["optim", "sched"])
        config = SequenceClassifierConfig(
            backbone=backbone,
            num_classes=data["num_classes"],
            vocab_size=data.get("vocab_size"),
            input_dim=data.get("input_dim"),
            max_length=data["max_length"] if positional else None,
            position_encoding=position_encoding,
            position_dropout=position_dropout,
            pooling=pooling,
            pair=data.get("pair", False),
            init_std=init_std,
            mask_padding=mask_padding,
        )
        self.model = SequenceClassifier(config)
        compile_model(self.model.backbone, compile)
        self.label_smoothing = label_smoothing
        self.add_split_metrics("acc", lambda: accuracy_metric(data["num_classes"], average="micro"))
        self.add_split_metrics("loss", WeightedMean)

    def shared_step(self, batch: dict[str, Tensor], split: str) -> Tensor:
        logits = self.model(batch["inputs"], batch.get("mask"), batch.get("inputs2"), batch.get("mask2"))
        loss = F.cross_entropy(logits.float(), batch["labels"], label_smoothing=self.label_smoothing)
        self.log_loss_and_accuracy(split, loss, logits, batch["labels"])
        return loss
