"""Models: one backbone, three heads (causal LM, sequence classifier, image classifier), and the named sizes."""

from hgrn.models.backbone import Backbone, BackboneConfig
from hgrn.models.classifier import SequenceClassifier, SequenceClassifierConfig
from hgrn.models.lm import CausalLM, CausalLMConfig
from hgrn.models.registry import build_model, create_model, list_models, model_config
from hgrn.models.vision import ImageClassifier, ImageClassifierConfig

__all__ = [
    "Backbone",
    "BackboneConfig",
    "CausalLM",
    "CausalLMConfig",
    "ImageClassifier",
    "ImageClassifierConfig",
    "SequenceClassifier",
    "SequenceClassifierConfig",
    "build_model",
    "create_model",
    "list_models",
    "model_config",
]
