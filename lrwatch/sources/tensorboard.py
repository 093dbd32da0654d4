"""TensorBoard event files: an incremental TFRecord reader that keeps only scalar summaries.

Not tensorboard's own loaders: without TensorFlow they check CRCs in pure Python and parse every
record, far too slow for a daemon tailing many runs. Here the CRCs run in C, records that cannot
hold a summary (graph defs, run metadata) are skipped from their first bytes, and the file is
read in big chunks. Records are TFRecord-framed (``records.py``), each an ``Event`` proto;
scalars are ``simple_value`` (torch, tensorboardX, TF1) or a 0-d float ``tensor`` (TF2), the tag
is the metric name. Damage is survived, never raised: a truncated last record is "not yet" (and
the file is not re-read until it has grown enough to hold it); a record whose data CRC fails is
skipped and counted; a length that fails its CRC or exceeds ``MAX_RECORD_BYTES`` is counted once
and the reader resynchronises on the next position whose length CRC verifies.

Keras writes one run as ``<run>/train/`` and ``<run>/validation/`` with the same tags: the run is
``<run>`` and each tag is prefixed with its folder (``validation/epoch_loss`` is then a
validation loss). Told by the name alone: TF2's writers end event file names in ``.v2``, torch's
do not, so Ultralytics' ``runs/detect/train/`` stays a run of its own.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from google.protobuf.message import DecodeError  # type: ignore[import-untyped, unused-ignore]
from tensorboard.compat.proto import event_pb2, summary_pb2, types_pb2

from lrwatch.sources.base import Batch, FileSource
from lrwatch.sources.records import (
    CRC,
    FOOTER_BYTES,
    HEADER,
    HEADER_BYTES,
    MASK_DELTA,
    crc32c,
    masked_crc32c,
)
from lrwatch.sources.tail import DEFAULT_CHUNK_BYTES, TailedReader

_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")
MAX_RECORD_BYTES = 64 << 20
"""Bigger than any real event (an image summary is a few MiB; TensorBoard's own loaders warn far
below this): a length beyond it is treated as damaged framing rather than waited for."""

KERAS_SPLITS = frozenset({"train", "validation"})
"""Folder names the Keras TensorBoard callback writes a run's event files into."""


def _keras_split(path: PurePath) -> bool:
    """Whether ``path`` is a Keras event file in a run's ``train/`` or ``validation/`` folder."""
    return path.name.endswith(".v2") and path.parent.name in KERAS_SPLITS


MAX_REMEMBERED_TAGS = 10_000  # bounds the state of a hostile file with endless non-scalar tags

# Candidate record starts when resynchronising: lengths below 4 GiB have four zero high bytes,
# and a zero length-CRC field marks a run of zero bytes (a sparse hole), not a header. Letting
# the regex engine find candidates keeps a resync over megabytes of garbage in C.
_CANDIDATE = re.compile(rb"(?=[\x00-\xff]{4}\x00{4}(?!\x00{4}))")

_SCALAR_DTYPES = frozenset({types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE})
_parse_event = event_pb2.Event.FromString

# The fast path (_SIMPLE_LAYOUT). torch's SummaryWriter, tensorboardX and TF1 write a scalar as an
# Event of exactly: wall_time (field 1: 0x09 + 8-byte double), step (field 2: 0x10 + varint;
# absent when 0), summary (field 5: 0x2A + length) holding one value (0x0A + length) made of a
# tag (0x0A + length + UTF-8) and a simple_value (0x15 + 4-byte float). TensorBoardReader._parse
# checks those bytes and lengths inline (a call per record would cost a third of the budget) and
# decodes the event without building a protobuf message, 3x faster; anything else about the
# layout (several values, metadata, a tag over 118 bytes, TF2 tensors) goes to protobuf.

# Field keys (number << 3 | wire type) of a Summary.Value that hold something other than a
# scalar: obsolete_old_style_histogram (3), image (4), histo (5), audio (6).
_NOT_SCALAR_VALUE = frozenset({0x1A, 0x22, 0x2A, 0x32})
# ... and of the top-level Event fields that are not a summary: file_version (3), graph_def (4),
# log_message (6), session_log (7), tagged_run_metadata (8), meta_graph_def (9).
_NOT_SUMMARY = frozenset({0x1A, 0x22, 0x32, 0x3A, 0x42, 0x4A})


def _varint(data: bytes, i: int) -> tuple[int, int]:
    """The varint at ``data[i]`` and the position after it; IndexError past the end."""
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _step(encoded: bytes) -> int:
    """A multi-byte varint step (int64: two's complement beyond 2**63)."""
    step, _ = _varint(encoded, 0)
    return step - (1 << 64) if step >= 1 << 63 else step


def may_hold_scalar(data: bytes) -> bool:
    """False only when the Event is known to hold no scalar, read off its wire format without
    parsing it: a top-level field that is not a summary (graph defs run to megabytes), or a
    summary whose every value is an image, histogram or audio clip. Serialisers write fields in
    number order and tags first, which is what makes this cheap; any layout not understood
    answers True and the record is parsed."""
    try:
        i, n = 0, len(data)
        if n and data[0] == 0x09:  # wall_time
            i = 9
        if i < n and data[i] == 0x10:  # step
            _, i = _varint(data, i + 1)
        if i >= n:
            return False  # wall time and step only: nothing to read
        if data[i] != 0x2A:
            return data[i] not in _NOT_SUMMARY
        length, i = _varint(data, i + 1)
        end = min(i + length, n)
        while i < end:
            if data[i] != 0x0A:  # Summary.value
                return True
            length, i = _varint(data, i + 1)
            value_end, j = i + length, i
            while j < value_end:
                key = data[j]
                if key == 0x0A or key == 0x4A:  # tag, metadata: skip over
                    length, j = _varint(data, j + 1)
                    j += length
                elif key in _NOT_SCALAR_VALUE:
                    break
                else:
                    return True  # simple_value, tensor, or something new
            i = value_end
        return False
    except IndexError:
        return True  # truncated framing inside the event: let the parser judge it


class TensorBoardReader(TailedReader):
    """Tails one ``*tfevents*`` file; see the module docstring."""

    format = "tensorboard"

    def __init__(self, path: Path, run: str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        super().__init__(path, run, chunk_bytes=chunk_bytes)
        self._resyncing = False  # inside a damaged stretch: counted once, when it began
        # Tags whose metadata named another plugin. TF2 writes summary metadata only with a tag's
        # first value, so later 0-d float tensors of such a tag must still be recognised as
        # not-scalars; persisted so that holds across a daemon restart too.
        self._other_tags: set[str] = set()
        self._tags: dict[bytes, str] = {}  # decoded tags of the fast path, not persisted
        self._prefix = f"{self.path.parent.name}/" if _keras_split(self.path) else ""
        self._awaiting = 0  # the file size the incomplete record at the offset needs

    def read(self) -> Batch:
        if self._awaiting:
            try:
                st = os.stat(self.path)
            except OSError:
                st = None
            if (
                st is not None
                and st.st_ino == self.tail.inode
                and self.tail.offset <= st.st_size < self._awaiting
            ):
                return Batch(self.run)  # the record being written is not complete yet
            self._awaiting = 0
        return super().read()

    def state_dict(self) -> dict[str, Any]:
        return {
            **self.tail.state_dict(),
            "resyncing": self._resyncing,
            "other_tags": sorted(self._other_tags),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        other_tags = state.get("other_tags", [])
        if not isinstance(other_tags, list) or not all(isinstance(t, str) for t in other_tags):
            raise ValueError(
                f"tensorboard state: other_tags must be a list of str, got {other_tags!r}"
            )
        self.tail.load_state_dict(state)
        self._resyncing = bool(state.get("resyncing", False))
        self._other_tags = set(other_tags)

    # --- framing -----------------------------------------------------------------------------

    def _parse(self, data: bytes, out: Batch) -> tuple[int, int]:
        # The hot loop (profiled): everything it calls per record is bound to a local, the CRC
        # masking is inlined (a function call per CRC costs as much as the CRC itself), and a
        # plain scalar event is decoded as _SIMPLE_LAYOUT says, without building a protobuf message.
        pos, end = 0, len(data)
        if self.tail.offset == 0:
            self._resyncing = False  # a fresh start (new file, truncation): nothing to resume
        unpack_header, unpack_crc, checksum = HEADER.unpack_from, CRC.unpack_from, crc32c
        unpack_double, unpack_float = _DOUBLE.unpack_from, _FLOAT.unpack_from
        steps, walls, values, tags = out.steps, out.wall_times, out.values, self._tags
        while end - pos >= HEADER_BYTES:
            length, length_crc = unpack_header(data, pos)
            crc = checksum(data[pos : pos + 8])
            if (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF != length_crc or (
                length > MAX_RECORD_BYTES
            ):
                if not self._resyncing:
                    self.corrupt += 1
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
                # the record is still being written: wait until the file can hold it
                self._awaiting = self.tail.offset + stop + FOOTER_BYTES
                return pos, stop + FOOTER_BYTES - pos
            payload = data[body:stop]
            pos = stop + FOOTER_BYTES
            crc = checksum(payload)
            if (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF != unpack_crc(data, stop)[0]:
                self.corrupt += 1
                continue
            # The fast path: see _SIMPLE_LAYOUT. Steps up to 2**21 (three varint bytes);
            # anything else about the layout that does not fit sends the record to protobuf.
            if length >= 20 and payload[0] == 0x09:  # 20: the shortest such event
                byte = payload[9]
                if byte != 0x10:
                    step, i = 0, 9  # proto3 leaves a zero step out
                else:
                    byte = payload[10]
                    if byte < 0x80:
                        step, i = byte, 11
                    else:
                        second = payload[11]
                        if second < 0x80:
                            step, i = (byte & 0x7F) | second << 7, 12
                        else:
                            third = payload[12]
                            step = (byte & 0x7F) | (second & 0x7F) << 7 | third << 14
                            i = 13 if third < 0x80 else length  # longer: not the fast path
                if i + 6 < length and payload[i] == 0x2A:
                    size = payload[i + 5]  # the tag's; the value's and summary's come before
                    at = i + 6
                    if (
                        length == at + size + 5
                        and payload[i + 4] == 0x0A
                        and payload[i + 3] == size + 7
                        and payload[i + 2] == 0x0A
                        and payload[i + 1] == size + 9
                        and payload[at + size] == 0x15
                    ):
                        raw = payload[at : at + size]
                        tag = tags.get(raw) or self._tag(raw)
                        if tag is not None:
                            steps.append(step)
                            walls.append(unpack_double(payload, 1)[0])
                            values.append({tag: unpack_float(payload, at + size + 1)[0]})
                            continue
            if may_hold_scalar(payload):
                self._event(payload, out)
        return pos, HEADER_BYTES

    def _tag(self, raw: bytes) -> str | None:
        """A tag's text, remembered (tags repeat on every step); None if not UTF-8, which the
        protobuf parser then judges."""
        try:
            tag = self._prefix + raw.decode()
        except UnicodeDecodeError:
            return None
        if len(self._tags) < MAX_REMEMBERED_TAGS:
            self._tags[raw] = tag
        return tag

    @staticmethod
    def _resync(data: bytes, start: int) -> int:
        """The first position from ``start`` whose 8 bytes' masked CRC matches the next 4, or -1.
        The length must also be plausible, so a resync cannot land on a giant bogus length."""
        last = len(data) - HEADER_BYTES
        for match in _CANDIDATE.finditer(data, start):
            pos = match.start()
            if pos > last:
                break
            length, length_crc = HEADER.unpack_from(data, pos)
            if masked_crc32c(data[pos : pos + 8]) == length_crc and length <= MAX_RECORD_BYTES:
                return pos
        return -1

    # --- events ------------------------------------------------------------------------------

    def _event(self, payload: bytes, out: Batch) -> None:
        try:
            event = _parse_event(payload)
        except DecodeError:  # the CRC held, so the writer itself wrote garbage
            self.corrupt += 1
            return
        found: dict[str, float] = {}
        for value in event.summary.value:  # empty when the event holds no summary
            kind = value.WhichOneof("value")
            if kind == "simple_value":
                found[self._prefix + value.tag] = value.simple_value
            elif kind == "tensor":
                number = self._tensor_scalar(value)
                if number is not None:
                    found[self._prefix + value.tag] = number
        if found:
            out.add(event.step, event.wall_time, found)

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


class TensorBoardSource(FileSource):
    """The built-in ``tensorboard`` format (plugins.py)."""

    reader = TensorBoardReader

    def claims(self, path: PurePath) -> bool:
        return "tfevents" in path.name

    def run_dir(self, path: PurePath) -> PurePath:
        """A Keras run's ``train/`` and ``validation/`` folders belong to the run above them."""
        return path.parent.parent if _keras_split(path) else path.parent
