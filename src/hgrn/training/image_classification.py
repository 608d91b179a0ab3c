"""Image classification with the DeiT recipe (ImageNet-1K): timm's Mixup / CutMix with label smoothing and
SoftTargetCrossEntropy in training, top-1 / top-5 accuracy in evaluation, the learning rate scaled by the batch.

The model is an HGRN image classifier built from the `model` config (the backbone of conf/model/vit/, the head that
`timm.create_model("hgrn2_vit_tiny")` builds) or any timm model (`model: {timm_model: deit_tiny_patch16_224}`), so
the DeiT baselines run through the same task, data and schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.scheduler.scheduler import Scheduler as TimmScheduler
from torch import Tensor, nn
from torch.optim import Optimizer

from hgrn.config import ConfigError
from hgrn.models.backbone import as_backbone_config
from hgrn.models.registry import HEADS
from hgrn.models.vision import ImageClassifier, timm_default_cfg
from hgrn.training.base import (
    OptimizerFactory,
    ScheduleFactory,
    TaskModule,
    WeightedMean,
    accuracy_metric,
    compile_model,
)


@dataclass
class TimmModelConfig:
    """A `model` node that names a timm model instead of an HGRN backbone.

    timm_model: timm's name (deit_tiny_patch16_224, ...); drop_path: its drop_path_rate (stochastic depth);
    model_args: further keyword arguments of the model (e.g. depth, embed_dim for a small test model).
    """

    timm_model: str
    drop_path: float = 0.0
    model_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not timm.is_model(self.timm_model):
            raise ValueError(f"timm_model={self.timm_model!r} is not a timm model (timm.list_models() lists them)")


def is_timm_model(node: Any) -> bool:
    """Whether a `model` config (a mapping) names a timm model rather than an HGRN backbone."""
    return "timm_model" in node


def build_image_model(
    model: dict[str, Any], num_classes: int, image_size: int, patch_size: int | None, drop_rate: float
) -> nn.Module:
    """images [B, 3, image_size, image_size] -> logits [B, num_classes].

    An HGRN backbone gets the registry's image head (hgrn.models.registry.HEADS['vit']: patch 14, as the official
    HGRN ViTs) with this size, class count and, when given, patch size; a timm model is timm.create_model's."""
    if is_timm_model(model):
        spec = TimmModelConfig(**model)
        patch = {} if patch_size is None else {"patch_size": patch_size}
        return timm.create_model(
            spec.timm_model,
            pretrained=False,
            num_classes=num_classes,
            img_size=image_size,
            drop_rate=drop_rate,
            drop_path_rate=spec.drop_path,
            **patch,
            **spec.model_args,
        )
    head = HEADS["vit"](as_backbone_config(model))
    config = replace(
        head,
        image_size=image_size,
        patch_size=head.patch_size if patch_size is None else patch_size,
        num_classes=num_classes,
        drop_rate=drop_rate,
    )
    classifier = ImageClassifier(config)
    classifier.pretrained_cfg = classifier.default_cfg = timm_default_cfg(config)
    return classifier


def scaled_lr(lr: float, batch: int, reference_batch: int | None) -> float:
    """DeiT's linear scaling rule, lr x total batch / reference batch (512), or lr itself without a reference."""
    return lr if reference_batch is None else lr * batch / reference_batch


class ImageClassificationTask(TaskModule):
    """backbone: the `model` config (an HGRN backbone, or a TimmModelConfig); data: num_classes from the datamodule.

    image_size, patch_size: the model's input side and patch (None: the model's own, 14 for the HGRN ViTs);
    drop_rate: dropout before the classifier;
    mixup_alpha, cutmix_alpha, mixup_prob, mixup_switch_prob, mixup_mode, label_smoothing: timm.data.Mixup's
        arguments (DeiT: 0.8, 1.0, 1.0, 0.5, 'batch', 0.1); with both alphas 0 training uses timm's
        LabelSmoothingCrossEntropy (or plain cross-entropy without smoothing), as DeiT's main.py;
    lr_reference_batch: the optimiser's lr is optim.lr x (images per optimiser step over all processes) / this
        (DeiT: 512); None keeps optim.lr;
    channels_last: the model's convolutions and the images in channels-last memory layout;
    compile: false, 'parts', 'blocks' or 'graphs' for the HGRN backbone (hgrn.training.base.compile_model), a timm
        model whole for any; the first step then compiles.
    Evaluation reports acc (top-1), acc_top5 and the cross-entropy loss on the true labels.
    """

    def __init__(
        self,
        backbone: dict[str, Any],
        data: dict[str, Any],
        optim: OptimizerFactory,
        sched: ScheduleFactory | None = None,
        image_size: int = 224,
        patch_size: int | None = None,
        drop_rate: float = 0.0,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        mixup_mode: str = "batch",
        label_smoothing: float = 0.1,
        lr_reference_batch: int | None = 512,
        channels_last: bool = True,
        compile: bool | str = False,
        monitor: str = "val/acc",
        monitor_mode: str = "max",
        fp32_evaluation: bool = False,
    ) -> None:
        super().__init__(optim, sched, monitor, monitor_mode, fp32_evaluation)
        self.save_hyperparameters(ignore=["optim", "sched"])
        num_classes = data["num_classes"]
        self.model = build_image_model(backbone, num_classes, image_size, patch_size, drop_rate)
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        compile_model(self.model.backbone if isinstance(self.model, ImageClassifier) else self.model, compile)
        self.mixup = None
        if mixup_alpha > 0 or cutmix_alpha > 0:
            self.mixup = Mixup(
                mixup_alpha=mixup_alpha,
                cutmix_alpha=cutmix_alpha,
                prob=mixup_prob,
                switch_prob=mixup_switch_prob,
                mode=mixup_mode,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
            self.train_criterion: nn.Module = SoftTargetCrossEntropy()
        elif label_smoothing > 0:
            self.train_criterion = LabelSmoothingCrossEntropy(smoothing=label_smoothing)
        else:
            self.train_criterion = nn.CrossEntropyLoss()
        self.lr_reference_batch = lr_reference_batch
        self.add_split_metrics("acc", lambda: accuracy_metric(num_classes, average="micro"))
        self.add_split_metrics("acc_top5", lambda: accuracy_metric(num_classes, top_k=min(5, num_classes)))
        self.add_split_metrics("loss", WeightedMean)

    def setup(self, stage: str) -> None:
        batch = getattr(self.trainer.datamodule, "batch_size", None) if self.trainer is not None else None
        if stage == "fit" and self.mixup is not None and self.mixup.mode == "batch" and batch and batch % 2:
            raise ConfigError(
                f"data.batch_size={batch} must be even: timm's Mixup in batch mode pairs each image with the batch "
                "reversed"
            )

    def shared_step(self, batch: dict[str, Tensor], split: str) -> Tensor:
        """batch: inputs [B, 3, H, W], labels [B]. Training mixes the batch (soft targets [B, classes]); accuracy is
        always against the images' own labels."""
        images, labels = batch["inputs"], batch["labels"]
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if split == "train":
            targets = labels
            if self.mixup is not None:
                images, targets = self.mixup(images, labels)
            logits = self.model(images)
            loss = self.train_criterion(logits.float(), targets)
        else:
            logits = self.model(images)
            loss = F.cross_entropy(logits.float(), labels)
        self.log_loss_and_accuracy(split, loss, logits, labels)
        self.split_metric(split, "acc_top5").update(logits, labels)
        self.log_epoch_metric(split, "acc_top5", prog_bar=False)
        return loss

    def images_per_step(self) -> int:
        """Images per optimiser step over every process (the batch DeiT scales the lr by)."""
        trainer = self.trainer
        per_device = trainer.datamodule.batch_size
        return per_device * trainer.num_devices * trainer.num_nodes * trainer.accumulate_grad_batches

    def build_optimizer(self, clips_gradients: bool | None = None) -> Optimizer:
        """The configured optimiser at optim.lr scaled by the batch (DeiT's rule), before any schedule reads it."""
        optimizer = super().build_optimizer(clips_gradients)
        for group in optimizer.param_groups:
            group["lr"] = scaled_lr(group["lr"], self.images_per_step(), self.lr_reference_batch)
        return optimizer

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """timm's schedulers step by epoch number: after epoch e, step(e), as DeiT's main.py (so epoch e + 1 trains
        at the schedule's value of e); other schedulers as Lightning steps them."""
        if isinstance(scheduler, TimmScheduler):
            scheduler.step(epoch=self.current_epoch)
        else:
            super().lr_scheduler_step(scheduler, metric)
