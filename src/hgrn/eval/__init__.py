"""Evaluation of trained language models: checkpoint loading, perplexity over token streams, generation through the
recurrent state, and the lm-eval adapter (hgrn.eval.harness, imported on demand: lm-eval is an optional extra)."""

from hgrn.eval.checkpoint import LoadedLM, load_causal_lm
from hgrn.eval.generation import Sampling, generate
from hgrn.eval.perplexity import Perplexity, perplexity

__all__ = ["LoadedLM", "Perplexity", "Sampling", "generate", "load_causal_lm", "perplexity"]
