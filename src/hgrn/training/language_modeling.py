"""Next-token prediction with labels [B, T] (-100 = nothing to predict): language modeling and MQAR.

Reports the loss and the perplexity as token-weighted means over the labelled positions of a whole split (each
batch weighs by its labelled tokens). Language modeling trains on the chunked linear + cross-entropy, which never
holds the logits of the whole batch; a task that reports token accuracy (`token_accuracy`, MQAR's metric) needs the
logits and takes the unfused path, with the output head applied at the labelled positions only (MQAR labels one
position in 16 or fewer, and at d_model 128 the head over a vocabulary of 8192 is most of the model's work).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
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


def summed_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """The cross-entropy of logits [N, vocab] (any float dtype; taken in fp32) against labels [N], summed."""
    return F.cross_entropy(logits.float(), labels, reduction="sum")


@functools.cache
def compiled_summed_cross_entropy() -> Callable[[Tensor, Tensor], Tensor]:
    """summed_cross_entropy as one Inductor graph (a compiled model's token-accuracy path): the fp32 copy of the
    logits, their log-softmax and its backward fuse into a pass or two over the 16-bit logits. Eager PyTorch writes
    the fp32 logits, their log-softmax and its gradient in full: at MQAR's 4,096 labelled rows x 8,192 words,
    134 MB each, 0.27 of a step's 3.3 ms of kernels on an H100 (results/bench/mqar-study-*)."""
    return torch.compile(summed_cross_entropy)


class LanguageModelingTask(TaskModule):
    """token_accuracy: also report the accuracy over labelled positions (logits path).
    compile: false, 'parts', 'blocks' or 'graphs' (hgrn.training.base.compile_model; CausalLM.compile_blocks also
        compiles the embedding and the loss: the chunked one's softmax, or the token-accuracy path's cross-entropy);
        the first step then compiles.
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
            # over the labelled positions only (labelled_logits drops the others before the metric sees them)
            self.add_split_metrics("acc", lambda: accuracy_metric(vocab, average="micro"))
        self.add_split_metrics("loss", WeightedMean)

    def shared_step(self, batch: dict[str, Tensor], split: str) -> Tensor:
        """The batch's mean loss over its labelled positions (0 when it has none, with zero gradients)."""
        inputs, labels = batch["inputs"], batch["labels"]
        if self.token_accuracy:
            logits, flat_labels = self.labelled_logits(inputs, labels, batch.get("label_positions"))
            labelled = len(flat_labels)
            summed = compiled_summed_cross_entropy() if self.model.compiled and labelled else summed_cross_entropy
            loss = summed(logits, flat_labels) / max(labelled, 1)
            self.log_loss_and_accuracy(split, loss, logits, flat_labels, weight=labelled)
            return loss
        labelled = (labels != IGNORE).sum()
        loss = self.model.loss(inputs, labels, reduction="sum") / labelled.clamp_min(1)
        self.split_metric(split, "loss").update(loss.detach(), weight=labelled)  # the split's token-weighted mean
        self.log_epoch_metric(split, "loss", loss.detach())
        return loss

    def labelled_logits(self, inputs: Tensor, labels: Tensor, positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(logits [N, vocab], labels [N]) at the N labelled positions of inputs / labels [B, T], in row order: the
        head reads only the features it is scored on (N = 0 gives empty tensors, whose loss sum is 0 with zero
        gradients). positions [B, P]: where each row's labels are, in order (MQAR's batches carry them), gathered
        (whose backward scatters the rows' gradients back in one kernel, where an advanced index's sorts its indices
        first); without them a boolean index finds them, whose size is a device read that stops the host until the
        forward pass is done."""
        hidden = self.model.hidden_states(inputs)
        if positions is None:
            keep = labels != IGNORE
            return self.model.lm_head(hidden[keep]), labels[keep]
        features = hidden.gather(1, positions[:, :, None].expand(-1, -1, hidden.shape[-1]))
        return self.model.lm_head(features.flatten(0, 1)), labels.gather(1, positions).flatten()

    def on_validation_epoch_end(self) -> None:
        self.log("val/ppl", self.val_loss.compute().exp())

    def on_test_epoch_end(self) -> None:
        self.log("test/ppl", self.test_loss.compute().exp())
