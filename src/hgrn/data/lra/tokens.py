"""Token ids of the LRA inputs: bytes (Text, Retrieval) and pixel intensities (Image, Pathfinder), 0 kept for padding.

Bytes follow LRA's byte-level encoder (tfds ByteTextEncoder: no learned vocabulary, every byte is a token) shifted
past two specials, and every document ends in <eos> as in s4 (`append_eos: true`), which gives pooling heads and
causal readouts a fixed last token. Pixels are LRA's 256 intensity tokens shifted by one so that black is not padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

PAD_ID, EOS_ID = 0, 1
BYTE_OFFSET = 2
BYTE_VOCAB_SIZE = 256 + BYTE_OFFSET
PIXEL_OFFSET = 1
PIXEL_VOCAB_SIZE = 256 + PIXEL_OFFSET


def truncate_document(raw: bytes, max_length: int) -> bytes:
    """The first max_length - 1 bytes, leaving room for <eos>. A cut may split a multi-byte UTF-8 character; at
    byte level that is just a shorter sequence."""
    return raw[: max_length - 1]


def pixel_ids(pixels: Tensor) -> Tensor:
    """uint8 intensities -> token ids 1..256."""
    return pixels.long() + PIXEL_OFFSET


class ByteDocuments:
    """Byte documents packed end to end in one uint8 tensor with offsets, so a split is two tensors to cache."""

    def __init__(self, data: Tensor, offsets: Tensor) -> None:
        self.data, self.offsets = data, offsets

    @classmethod
    def pack(cls, documents: Sequence[bytes]) -> ByteDocuments:
        lengths = np.fromiter((len(d) for d in documents), dtype=np.int64, count=len(documents))
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        data = np.frombuffer(b"".join(documents), dtype=np.uint8).copy()
        return cls(torch.from_numpy(data), torch.from_numpy(offsets))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> Tensor:
        """Token ids of one document: its bytes shifted by BYTE_OFFSET, then <eos>."""
        raw = self.data[self.offsets[index] : self.offsets[index + 1]]
        return torch.cat((raw.long() + BYTE_OFFSET, torch.tensor([EOS_ID])))
