"""LightningModules and training utilities: the tasks (sequence and image classification, language modeling),
optimiser groups, schedules and the callbacks that measure a run."""

from hgrn.training.classification import ClassificationTask
from hgrn.training.image_classification import ImageClassificationTask
from hgrn.training.language_modeling import LanguageModelingTask

__all__ = ["ClassificationTask", "ImageClassificationTask", "LanguageModelingTask"]
