"""The data-to-head contract: what a model head needs to know about its data, read off the datamodule before any
data is loaded.

Every datamodule exposes the properties it has (num_classes, vocab_size or input_dim, max_length, pair); the
training task builds its head from them, so a head never hard-codes a vocabulary or a class count.
"""

from __future__ import annotations

from typing import Any

import lightning as L

DATA_PROPERTIES = ("num_classes", "vocab_size", "input_dim", "max_length", "pair")


def data_spec(datamodule: L.LightningDataModule) -> dict[str, Any]:
    """The properties of `datamodule` among DATA_PROPERTIES that are set (not None)."""
    return {name: getattr(datamodule, name) for name in DATA_PROPERTIES if getattr(datamodule, name, None) is not None}
