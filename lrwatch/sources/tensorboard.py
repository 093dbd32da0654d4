"""TensorBoard event files: an incremental TFRecord reader that keeps only scalar summaries.

Why not tensorboard's own loaders: without TensorFlow they check CRCs in pure Python and parse
every record whatever it holds, which is far too slow for a daemon tailing many runs. Here the
CRCs run in C (``google_crc32c``), records that cannot hold a summary (graph defs, run metadata)
are skipped from their first bytes without being parsed, and the file is read in big chunks.

TFRecord framing, per record::

    uint64 length (LE) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)

Each ``data`` is an ``Event`` proto. Scalars come as ``summary.value[i].simple_value`` (torch's
SummaryWriter, tensorboardX, TF1) or as a 0-d float/double ``tensor`` (TF2, plugin ``scalars``);
the tag is the metric name. Histograms, images, text and the like are skipped.

Damage is survived, never raised:

- a truncated last record (header or body not fully written) is "not yet": the offset stays at
  the end of the last complete record;
- a record whose *data* CRC fails is skipped and counted: its framing is still sound;
- a record whose *length* CRC fails cannot be framed at all: it is counted once and the reader
  resynchronises on the next position whose length CRC verifies.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import google_crc32c
from google.protobuf.message import DecodeError  # type: ignore[import-untyped, unused-ignore]
from tensorboard.compat.proto import event_pb2, summary_pb2, types_pb2

from lrwatch.sources.tail import DEFAULT_CHUNK_BYTES, FileTail, read_samples
from lrwatch.types import Sample

_HEADER = struct.Struct("<QI")  # length, masked crc of the length
_U32 = struct.Struct("<I")
_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")
_MASK_DELTA = 0xA282EAD8
HEADER_BYTES = 12
FOOTER_BYTES = 4
MAX_RECORD_BYTES = 1 << 30
"""Bigger than any real event (protobufs stop at 2 GiB, TensorBoard records are far smaller):
a length beyond it is treated as damaged framing rather than allocated."""

MAX_REMEMBERED_TAGS = 10_000  # bounds the state of a hostile file with endless non-scalar tags

# Candidate record starts when resynchronising: lengths below 4 GiB have four zero high bytes,
# and a zero length-CRC field marks a run of zero bytes (a sparse hole), not a header. Letting
# the regex engine find candidates keeps a resync over megabytes of garbage in C.
_CANDIDATE = re.compile(rb"(?=[\x00-\xff]{4}\x00{4}(?!\x00{4}))")

# The first byte of each top-level Event field that is not a summary: file_version (3),
# graph_def (4), log_message (6), session_log (7), tagged_run_metadata (8), meta_graph_def (9).
_NOT_SUMMARY = frozenset({0x1A, 0x22, 0x32, 0x3A, 0x42, 0x4A})
_SCALAR_DTYPES = frozenset({types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE})


_crc32c = google_crc32c.value  # takes bytes only (no memoryview): records are sliced as bytes
_parse_event = event_pb2.Event.FromString
_PEEK_ABOVE = 512
"""Records at least this long are peeked at before parsing (graph defs run to megabytes); shorter
ones, the scalars among them, are cheaper to parse than to peek at."""


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C (masking keeps CRCs of CRC-bearing data from being trivial)."""
    crc: int = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _may_hold_summary(data: bytes) -> bool:
    """False only when the Event's first field after wall_time and step is known not to be a
    summary. Serialisers write fields in number order, so this is exact for every writer we know;
    for any other layout it answers True and the record is parsed."""
    i, n = 0, len(data)
    if n and data[0] == 0x09:  # wall_time: tag + 8-byte double
        i = 9
    if i < n and data[i] == 0x10:  # step: tag + varint
        i += 1
        while i < n and data[i] & 0x80:
            i += 1
        i += 1
    return i >= n or data[i] not in _NOT_SUMMARY


class TensorBoardReader:
    """Tails one ``*tfevents*`` file; see the module docstring."""

    format = "tensorboard"

    def __init__(self, path: Path, run: str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self.path = Path(path)
        self.run = run
        self.has_more = False  # the last read() stopped at its byte budget: call again
        self._tail = FileTail(self.path, chunk_bytes=chunk_bytes)
        self._corrupt = 0
        self._resyncing = False  # inside a damaged stretch: counted once, when it began
        # Tags whose metadata named another plugin. TF2 writes summary metadata only with a tag's
        # first value, so later 0-d float tensors of such a tag must still be recognised as
        # not-scalars; persisted so that holds across a daemon restart too.
        self._other_tags: set[str] = set()

    def read(self) -> list[Sample]:
        samples, self.has_more = read_samples(self._tail, self._parse)
        return samples

    @property
    def stats(self) -> Mapping[str, int]:
        return {"corrupt_records": self._corrupt, **self._tail.counters}

    def state_dict(self) -> dict[str, Any]:
        return {
            **self._tail.state_dict(),
            "resyncing": self._resyncing,
            "other_tags": sorted(self._other_tags),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        other_tags = state.get("other_tags", [])
        if not isinstance(other_tags, list) or not all(isinstance(t, str) for t in other_tags):
            raise ValueError(
                f"tensorboard state: other_tags must be a list of str, got {other_tags!r}"
            )
        self._tail.load_state_dict(state)
        self._resyncing = bool(state.get("resyncing", False))
        self._other_tags = set(other_tags)

    # --- framing -----------------------------------------------------------------------------

    def _parse(self, data: bytes, out: list[Sample]) -> tuple[int, int]:
        # The hot loop: everything it calls per record is bound to a local, and the CRC masking
        # is inlined (a function call per CRC costs as much as the CRC itself).
        pos, end = 0, len(data)
        if self._tail.offset == 0:
            self._resyncing = False  # a fresh start (new file, truncation): nothing to resume
        unpack_header, unpack_u32, crc32c = _HEADER.unpack_from, _U32.unpack_from, _crc32c
        event = self._event
        while end - pos >= HEADER_BYTES:
            length, length_crc = unpack_header(data, pos)
            crc = crc32c(data[pos : pos + 8])
            if (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF != length_crc or (
                length > MAX_RECORD_BYTES
            ):
                if not self._resyncing:
                    self._corrupt += 1
                    self._resyncing = True
                found = self._resync(data, pos + 1)
                if found < 0:
                    # No record starts before the last 11 bytes, which may yet begin one.
                    return end - HEADER_BYTES + 1, 0
                pos = found
                continue
            self._resyncing = False
            body = pos + HEADER_BYTES
            stop = body + length
            if stop + FOOTER_BYTES > end:
                return pos, stop + FOOTER_BYTES - pos  # the record is still being written
            payload = data[body:stop]
            pos = stop + FOOTER_BYTES
            crc = crc32c(payload)
            if (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF != unpack_u32(data, stop)[
                0
            ]:
                self._corrupt += 1
            elif length < _PEEK_ABOVE or _may_hold_summary(payload):
                event(payload, out)
        return pos, HEADER_BYTES

    @staticmethod
    def _resync(data: bytes, start: int) -> int:
        """The first position from ``start`` whose 8 bytes' masked CRC matches the next 4, or -1.
        The length must also be plausible, so a resync cannot land on a giant bogus length."""
        last = len(data) - HEADER_BYTES
        for match in _CANDIDATE.finditer(data, start):
            pos = match.start()
            if pos > last:
                break
            length, length_crc = _HEADER.unpack_from(data, pos)
            if masked_crc32c(data[pos : pos + 8]) == length_crc and length <= MAX_RECORD_BYTES:
                return pos
        return -1

    # --- events ------------------------------------------------------------------------------

    def _event(self, payload: bytes, out: list[Sample]) -> None:
        try:
            event = _parse_event(payload)
        except DecodeError:  # the CRC held, so the writer itself wrote garbage
            self._corrupt += 1
            return
        values = event.summary.value  # empty when the event holds no summary
        if not values:
            return
        run, step, wall_time, append = self.run, event.step, event.wall_time, out.append
        for value in values:
            kind = value.WhichOneof("value")
            if kind == "simple_value":
                append(Sample(run, value.tag, step, value.simple_value, wall_time))
            elif kind == "tensor":
                number = self._tensor_scalar(value)
                if number is not None:
                    append(Sample(run, value.tag, step, number, wall_time))

    def _tensor_scalar(self, value: summary_pb2.Summary.Value) -> float | None:
        """The number in a TF2 scalar summary: a 0-d float/double tensor of plugin ``scalars``
        (or without metadata, as TF2 writes all but a tag's first value), else None."""
        tensor = value.tensor
        if tensor.dtype not in _SCALAR_DTYPES or len(tensor.tensor_shape.dim):
            return None  # checked first: then only numeric 0-d tags are ever remembered
        tag = value.tag
        plugin = value.metadata.plugin_data.plugin_name if value.HasField("metadata") else ""
        if plugin == "scalars":
            self._other_tags.discard(tag)
        elif plugin:
            if len(self._other_tags) < MAX_REMEMBERED_TAGS:
                self._other_tags.add(tag)
            return None
        elif tag in self._other_tags:
            return None
        is_float = tensor.dtype == types_pb2.DT_FLOAT
        content = tensor.tensor_content
        if content:
            layout = _FLOAT if is_float else _DOUBLE
            if len(content) != layout.size:
                return None
            number: float = layout.unpack(content)[0]
            return number
        values = tensor.float_val if is_float else tensor.double_val
        return float(values[0]) if len(values) == 1 else None
