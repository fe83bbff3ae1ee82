"""Reading TFRecord files (the Evaluator's metrics, TensorBoard's event files) without importing TensorFlow.

TensorBoard's TensorFlow-free record reader (the one it uses when TensorFlow is absent) does the work, CRC checks
included: importing TensorFlow would cost the command line ~5 s for a few small files.
"""
from __future__ import annotations

from collections.abc import Iterator

from tensorboard.compat.tensorflow_stub import errors
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New


def read_records(path: str) -> Iterator[bytes]:
    """The records of an uncompressed TFRecord file, in order. Raises ValueError for a truncated or corrupt one."""
    reader = PyRecordReader_New(path)
    try:
        while True:
            try:
                reader.GetNext()
            except errors.OutOfRangeError:
                return
            except errors.DataLossError as e:
                raise ValueError(e.message) from None
            yield reader.record()
    finally:
        reader.file_handle.close()
