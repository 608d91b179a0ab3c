"""Next-token prediction with labels [B, T] (-100 = nothing to predict): language modeling and MQAR.

Reports the loss and the perplexity as token-weighted means over the labelled positions of a whole split (each
batch weighs by its labelled tokens). Both train on the chunked linear + cross-entropy, which never holds the logits
of the whole batch; a task that reports token accuracy (`token_accuracy`, MQAR's metric) applies the output head at
the labelled positions only (MQAR labels one position in 16 or fewer, and at d_model 128 the head over a vocabulary
of 8192 is most of the model's work), and once more without gradients for the predictions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hgrn.models import CausalLM, CausalLMConfig
from hgrn.training.base import (
    OptimizerFactory,
    ScheduleFactory,
    TaskModule,
    WeightedMean,
    accuracy_metric,
    compile_model,
)

IGNORE = -100


class LanguageModelingTask(TaskModule):
    """token_accuracy: also report the accuracy over labelled positions (logits path).
    compile: false, 'parts', 'blocks' or 'graphs' (hgrn.training.base.compile_model; CausalLM.compile_blocks also
        compiles the embedding and the loss's per-chunk softmax); the first step then compiles.
    The other arguments as TaskModule's."""

    def __init__(
        self,
        backbone: dict[str, Any],
        data: dict[str, Any],
        optim: OptimizerFactory,
        sched: ScheduleFactory | None = None,
        tie_embeddings: bool = True,
        token_accuracy: bool = True,
        compile: bool | str = False,
        monitor: str = "val/loss",
        monitor_mode: str = "min",
        fp32_evaluation: bool = False,
    ) -> None:
        super().__init__(optim, sched, monitor, monitor_mode, fp32_evaluation)
        self.save_hyperparameters(ignore=["optim", "sched"])
        vocab = data["vocab_size"]
        self.model = CausalLM(CausalLMConfig(backbone=backbone, vocab_size=vocab, tie_embeddings=tie_embeddings))
        compile_model(self.model, compile)
        self.token_accuracy = token_accuracy
        if token_accuracy:
            # over the labelled positions only (labelled_features drops the others before the metric sees them)
            self.add_split_metrics("acc", lambda: accuracy_metric(vocab, average="micro"))
        self.add_split_metrics("loss", WeightedMean)

    def shared_step(self, batch: dict[str, Tensor], split: str) -> Tensor:
        """The batch's mean loss over its labelled positions (0 when it has none, with zero gradients)."""
        inputs, labels = batch["inputs"], batch["labels"]
        if self.token_accuracy:
            features, flat_labels = self.labelled_features(inputs, labels, batch.get("label_positions"))
            labelled = len(flat_labels)
            loss = self.model.head_loss(features, flat_labels, reduction="sum") / max(labelled, 1)
            with torch.no_grad():
                logits = self.model.lm_head(features)  # the predictions: the loss holds no logits
            self.log_loss_and_accuracy(split, loss, logits, flat_labels, weight=labelled)
            return loss
        labelled = (labels != IGNORE).sum()
        loss = self.model.loss(inputs, labels, reduction="sum") / labelled.clamp_min(1)
        self.split_metric(split, "loss").update(loss.detach(), weight=labelled)  # the split's token-weighted mean
        self.log_epoch_metric(split, "loss", loss.detach())
        return loss

    def labelled_features(
        self, inputs: Tensor, labels: Tensor, positions: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(final features [N, d], labels [N]) at the N labelled positions of inputs / labels [B, T], in row order, so
        the head reads only the features it is scored on (N = 0 gives empty tensors, whose loss sum is 0 with zero
        gradients). positions [B, P]: where each row's labels are, in order (MQAR's batches carry them), gathered
        (whose backward scatters the rows' gradients back in one kernel, where an advanced index's sorts its indices
        first); without them a boolean index finds them, whose size is a device read that stops the host until the
        forward pass is done."""
        hidden = self.model.hidden_states(inputs)
        if positions is None:
            keep = labels != IGNORE
            return hidden[keep], labels[keep]
        features = hidden.gather(1, positions[:, :, None].expand(-1, -1, hidden.shape[-1]))
        return features.flatten(0, 1), labels.gather(1, positions).flatten()

    def on_validation_epoch_end(self) -> None:
        self.log("val/ppl", self.val_loss.compute().exp())

    def on_test_epoch_end(self) -> None:
        self.log("test/ppl", self.test_loss.compute().exp())
