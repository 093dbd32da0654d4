"""TFRecord framing: how a TensorBoard event file cuts its bytes into records.

Per record::

    uint64 length (LE) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)

One module for both ends that touch it: the reader of the job's event files
(``sources/tensorboard.py``, which inlines the masking in its hot loop) and the writer of
lrwatch's own (``sinks/tensorboard.py``), so what lrwatch writes is what it knows how to read.
The CRC runs in C (``google_crc32c``); nothing here imports tensorboard or torch.
"""

from __future__ import annotations

import struct

import google_crc32c

HEADER = struct.Struct("<QI")  # length, masked CRC of the length
CRC = struct.Struct("<I")  # a masked CRC: of the length in the header, of the data in the footer
HEADER_BYTES = 12
FOOTER_BYTES = 4
MASK_DELTA = 0xA282EAD8
crc32c = google_crc32c.value  # takes bytes only (no memoryview): records are sliced as bytes


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C (masking keeps CRCs of CRC-bearing data from being trivial)."""
    crc: int = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One TFRecord: length, masked CRC of the length, data, masked CRC of the data."""
    header = struct.pack("<Q", len(data))
    return header + CRC.pack(masked_crc32c(header)) + data + CRC.pack(masked_crc32c(data))
