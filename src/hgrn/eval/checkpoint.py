"""A trained causal LM back from the Lightning checkpoint `python -m hgrn.train` wrote, and the device and precision
evaluation runs it in.

The model is rebuilt exactly as `hgrn.training.run.evaluate` rebuilds any task: `LanguageModelingTask` from the
checkpoint's saved hyper-parameters (backbone config, data properties, tied embeddings), weights loaded with
`weights_only`, without optimiser or schedule, and uncompiled whatever the run trained with (`task.compile`):
evaluation feeds sequences of every length, each of which a compiled model would compile anew. Evaluation then uses
`task.model`, the bare `CausalLM`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hgrn.models import CausalLM
from hgrn.training import LanguageModelingTask


@dataclass(frozen=True)
class LoadedLM:
    """A causal LM in eval mode on `device`, with the properties of the data it was trained on (hgrn.data.spec:
    vocab_size, and max_length = the training block size where the datamodule reports it)."""

    path: Path
    model: CausalLM
    data: dict[str, Any]
    device: torch.device

    @property
    def max_length(self) -> int | None:
        return self.data.get("max_length")

    @property
    def run_dir(self) -> Path:
        """The training run's directory: checkpoints live in <run>/checkpoints/."""
        return self.path.parent.parent if self.path.parent.name == "checkpoints" else self.path.parent


def pick_device(name: str | None = None) -> torch.device:
    """The named device, or the GPU when there is one."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but this machine has no CUDA GPU; choose device cpu")
    return device


def inference_precision(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA (as the models train); full precision elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities are taken in float32 from bf16 logits; a float64 model keeps its precision."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def load_causal_lm(path: Path | str, device: str | torch.device | None = None) -> LoadedLM:
    """The CausalLM of a language-modeling checkpoint, in eval mode on `device` (default: the GPU if any)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; give a .ckpt written by `python -m hgrn.train`")
    device = device if isinstance(device, torch.device) else pick_device(device)
    try:
        task = LanguageModelingTask.load_from_checkpoint(
            path, map_location="cpu", weights_only=True, optim=None, sched=None, compile=False
        )
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"{path} is not a language-model checkpoint (its hyper-parameters do not build a LanguageModelingTask: "
            f"{error}); give the checkpoint of an LM run"
        ) from None
    model = task.model.to(device).eval()
    return LoadedLM(path=path, model=model, data=dict(task.hparams["data"]), device=device)
