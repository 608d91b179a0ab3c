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


def pack_rows(rows: Sequence[bytes]) -> tuple[Tensor, Tensor]:
    """Rows of small ids (bytes, or token ids below 256) end to end in one uint8 tensor, and int64 offsets [N + 1],
    so a split is two tensors to cache whatever its row lengths."""
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    data = np.frombuffer(b"".join(rows), dtype=np.uint8).copy()
    return torch.from_numpy(data), torch.from_numpy(offsets)


class PackedSequences:
    """The rows of pack_rows served as token-id sequences: row i's values plus `shift`, then `eos_id`.

    With max_length, a longer row keeps its first max_length - 1 tokens and the <eos> (s4's truncation), applied on
    read so that one cache serves every max_length.
    """

    def __init__(self, data: Tensor, offsets: Tensor, shift: int, eos_id: int, max_length: int | None = None) -> None:
        if max_length is not None and max_length < 2:
            raise ValueError(f"max_length must leave room for a token and <eos>, got {max_length}")
        self.data, self.offsets = data, offsets
        self.shift, self.eos_id, self.max_length = shift, eos_id, max_length

    def lengths(self) -> Tensor:
        """Tokens per sequence before truncation, <eos> included."""
        return self.offsets.diff() + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> Tensor:
        start, stop = int(self.offsets[index]), int(self.offsets[index + 1])
        if self.max_length is not None:
            stop = min(stop, start + self.max_length - 1)
        ids = torch.empty(stop - start + 1, dtype=torch.long)
        ids[:-1] = self.data[start:stop]
        ids[:-1] += self.shift
        ids[-1] = self.eos_id
        return ids


def byte_documents(data: Tensor, offsets: Tensor) -> PackedSequences:
    """Packed byte documents as byte-level token ids (byte b -> b + BYTE_OFFSET, then <eos>)."""
    return PackedSequences(data, offsets, BYTE_OFFSET, EOS_ID)


class PixelTokens:
    """uint8 pixel rows [N, P] served as token ids [P] (pixel_ids), so memory and cache stay one byte a pixel."""

    def __init__(self, pixels: Tensor) -> None:
        self.pixels = pixels

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> Tensor:
        return pixel_ids(self.pixels[index])
