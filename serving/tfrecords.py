"""TFRecord files (TensorFlow's record format, as ``tensorflow/core/lib/io/record_writer.cc`` writes it), without
TensorFlow: the request log writes them, warmup reads them. Each record is its length (uint64, little-endian),
the masked CRC-32C of those 8 bytes, the data, and the masked CRC-32C of the data."""
from __future__ import annotations

import struct
from collections.abc import Iterator

import google_crc32c

_MASK_DELTA = 0xA282EAD8


class RecordError(ValueError):
    """A file that is not whole TFRecords: truncated, or a checksum that does not match."""


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def encode(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


def read(path: str, max_records: int | None = None) -> Iterator[bytes]:
    """The records of a file, each checked. Raises RecordError (and OSError for a file that cannot be read)."""
    with open(path, "rb") as f:
        count = 0
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise RecordError(f"{path}: truncated record header after {count} record(s)")
            length_bytes, (length_crc,) = header[:8], struct.unpack("<I", header[8:])
            if masked_crc(length_bytes) != length_crc:
                raise RecordError(f"{path}: corrupted record at record {count} (length checksum)")
            (length,) = struct.unpack("<Q", length_bytes)
            data = f.read(length)
            footer = f.read(4)
            if len(data) < length or len(footer) < 4:
                raise RecordError(f"{path}: truncated record {count}")
            if masked_crc(data) != struct.unpack("<I", footer)[0]:
                raise RecordError(f"{path}: corrupted record {count} (data checksum)")
            count += 1
            if max_records is not None and count > max_records:
                raise RecordError(f"{path}: more than {max_records} records")
            yield data
