"""The executor: TFX 1.16's CsvExampleGen executor with its slow conversion replaced, and its write lighter locally.

TFX's executor reads each file in order (a quoted cell may span lines), parses every line with tfx_bsl's CSV
parser, infers each column's type over all rows (INT, FLOAT, STRING; UNKNOWN when a column is always empty), and
then builds one tf.train.Example per row in Python. That last step ran at about 14,000 rows/s on these machines,
and the Examples were serialized twice more after it (once to hash each into a split, once to write it): most of
CsvExampleGen's time on a large CSV, with Beam's overhead for every line passing through each step. Here each file is
one element: read and parsed with the same code (pipeline/dataset/csv_records.py), once to infer its types and once
to convert it, and its rows are converted in batches: tfx_bsl's
RecordBatchToExamplesEncoder (C++) serializes each column of a batch, held as an Arrow array of its inferred type.
A row's record is then its columns' map entries in key order: byte for byte the row's tf.Example as
`SerializeToString(deterministic=True)` writes it, about 120,000 rows/s. (The encoder's own whole-row order follows
a per-process hash seed, so its records would differ from run to run.) Being the bytes TFX hashes to pick a row's
split, they put every row in the split stock CsvExampleGen puts it in, and are written as they are.

A batch with an UNKNOWN column is converted by TFX's own code: such a column's feature has no value list at all, which
the encoder cannot express.

The splits are written as TFX writes them, but for one step. TFX's WriteSplit reshuffles the records before writing,
so that a distributed runner spreads the writing evenly. Beam's direct runner (`beam_runner=direct` and
`direct-multiprocess`: the FnApiRunner) holds a shuffle's whole input in memory, in this process, about 1 KB per
record (10.5 GB at 10 million rows), and gives the records back in the order they came (keys in first-seen order), so
there it only costs memory: on a runner in this process the records are written as they come, in the same order.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import pyarrow as pa
from absl import logging
from apache_beam.runners.direct import direct_runner
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from google.protobuf.internal import encoder as protobuf_encoder
from tfx import types
from tfx.components.example_gen import utils, write_split
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.example_gen.csv_example_gen import executor as tfx_csv
from tfx.components.util import examples_utils
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils
from tfx_bsl.coders import csv_decoder, example_coder

from pipeline.dataset import csv_records

ColumnType = csv_decoder.ColumnType
# The Arrow type of each inferred column type, as the tf.Example encoder reads it: a list per row.
_ARROW_TYPES = {ColumnType.INT: pa.large_list(pa.int64()), ColumnType.FLOAT: pa.large_list(pa.float32()),
                ColumnType.STRING: pa.large_list(pa.large_binary())}
_BATCH_ROWS = 1000
_FEATURES_TAG = b"\n"  # Example.features: field 1, length-delimited
_varint = protobuf_encoder._VarintBytes  # pylint: disable=protected-access


def _without_header(record: bytes) -> bytes:
    """A length-delimited field's content: after its one-byte tag and its varint length."""
    end = 1
    while record[end] & 0x80:
        end += 1
    return record[end + 1:]


class _InferFileTypes(beam.DoFn):
    """One file -> its ColumnTypeInferrer accumulator (column -> type), as TFX's inference over its rows builds it."""

    def __init__(self, column_names: list[str]):
        self._column_names = column_names

    def process(self, path: str) -> Iterable[dict[str, Any]]:
        inference = csv_records.TypeInference(self._column_names)
        for _, cells in csv_records.records(path):
            inference.add(cells)
        yield inference.accumulator()


class _FileToSerializedExamples(beam.DoFn):
    """One file -> the serialized tf.Examples of its rows, as TFX's _ParsedCsvToTfExample builds them."""

    def setup(self) -> None:
        self._encoder = example_coder.RecordBatchToExamplesEncoder()
        self._row_by_row = tfx_csv._ParsedCsvToTfExample()  # pylint: disable=protected-access

    def process(self, path: str, column_infos: list[csv_decoder.ColumnInfo]) -> Iterable[bytes]:
        batch: list[list[bytes]] = []
        for _, cells in csv_records.records(path):
            if not cells:
                continue  # TFX skips blank lines
            if len(cells) != len(column_infos):
                raise ValueError(f"Invalid CSV line: {cells}")  # TFX's own message
            batch.append(cells)
            if len(batch) == _BATCH_ROWS:
                yield from self._encode(batch, column_infos)
                batch = []
        if batch:
            yield from self._encode(batch, column_infos)

    def _encode(self, rows: list[list[bytes]], column_infos: list[csv_decoder.ColumnInfo]) -> Iterable[bytes]:
        if any(info.type not in _ARROW_TYPES for info in column_infos):
            for cells in rows:
                for example in self._row_by_row.process(cells, column_infos):
                    yield example.SerializeToString(deterministic=True)
            return
        columns = list(zip(*rows))
        entries = [self._map_entries(column_infos[i], columns[i])
                   for i in sorted(range(len(column_infos)), key=lambda i: column_infos[i].name)]
        for row in zip(*entries):
            features = b"".join(row)
            yield _FEATURES_TAG + _varint(len(features)) + features

    def _map_entries(self, info: csv_decoder.ColumnInfo, cells: tuple[bytes, ...]) -> list[bytes]:
        """Each row's entry of Features.feature for this column: the one-column Example the encoder writes, less
        the Example's own field header (tag and length), leaves exactly that entry, its own header included."""
        array = pa.array(_values(info.type, cells), type=_ARROW_TYPES[info.type])
        return [_without_header(record) for record in self._encoder.encode(pa.RecordBatch.from_arrays([array],
                                                                                                       [info.name]))]


def _values(column_type: Any, cells: Iterable[bytes]) -> list[list[Any]]:
    """One list per row: the cell's value, or no value for an empty cell (TFX's _int/_float/_bytes_handler)."""
    if column_type == ColumnType.INT:
        return [[int(cell)] if cell else [] for cell in cells]
    if column_type == ColumnType.FLOAT:
        return [[float(cell)] if cell else [] for cell in cells]
    return [[cell] if cell else [] for cell in cells]


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(bytes)
def _CsvToSerializedExamples(pipeline: beam.Pipeline, exec_properties: dict[str, Any],
                             split_pattern: str) -> beam.pvalue.PCollection:
    """TFX's _CsvToExample.expand, each step done per file rather than per line: the same files, header checks,
    parsing and type inference (over all rows of all files, before any row is converted)."""
    pattern = os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY], split_pattern)
    csv_files = fileio.glob(pattern)
    if not csv_files:
        raise RuntimeError(f"Split pattern {pattern} does not match any files.")
    column_names = io_utils.load_csv_column_names(csv_files[0])
    for csv_file in csv_files[1:]:
        if io_utils.load_csv_column_names(csv_file) != column_names:
            raise RuntimeError(f"Files in same split {pattern} have different header.")
    files = pipeline | "CreateFilenames" >> beam.Create(csv_files)
    inferrer = csv_decoder.ColumnTypeInferrer(column_names, skip_blank_lines=True)
    column_infos = beam.pvalue.AsSingleton(
        files
        | "InferFileTypes" >> beam.ParDo(_InferFileTypes(column_names))
        | "InferColumnTypes" >> beam.CombineGlobally(_MergedTypes(inferrer)))
    return files | "ToSerializedExamples" >> beam.ParDo(_FileToSerializedExamples(), column_infos)


class _MergedTypes(beam.CombineFn):
    """Per-file accumulators -> the column infos, by ColumnTypeInferrer's own merge and output."""

    def __init__(self, inferrer: csv_decoder.ColumnTypeInferrer):
        self._inferrer = inferrer

    def create_accumulator(self) -> dict[str, Any]:
        return {}

    def add_input(self, accumulator: dict[str, Any], file_types: dict[str, Any]) -> dict[str, Any]:
        return self._inferrer.merge_accumulators([accumulator, file_types])

    def merge_accumulators(self, accumulators: Iterable[dict[str, Any]]) -> dict[str, Any]:
        return self._inferrer.merge_accumulators(list(accumulators))

    def extract_output(self, accumulator: dict[str, Any]) -> list[csv_decoder.ColumnInfo]:
        return self._inferrer.extract_output(accumulator)


# Runners that run the pipeline in this process and keep a shuffle's data in its memory.
_IN_PROCESS_RUNNERS = (direct_runner.SwitchingDirectRunner, direct_runner.DirectRunner, FnApiRunner)


def writes_in_order(pipeline: beam.Pipeline, payload_format: int | None) -> bool:
    """Whether the splits are written without TFX's Reshuffle: TFRecord files, on a runner in this process."""
    return (isinstance(pipeline.runner, _IN_PROCESS_RUNNERS)
            and payload_format != example_gen_pb2.PayloadFormat.FORMAT_PARQUET)


@beam.ptransform_fn
@beam.typehints.with_input_types(bytes)
def _WriteSplitInOrder(records: beam.pvalue.PCollection, output_split_path: str) -> beam.pvalue.PDone:
    """TFX's WriteSplit of serialized records (gzipped TFRecord files, its file names) without its Reshuffle."""
    return records | "Write" >> beam.io.WriteToTFRecord(
        os.path.join(output_split_path, write_split.DEFAULT_FILE_NAME), file_name_suffix=".gz")


class Executor(BaseExampleGenExecutor):
    """CsvExampleGen's executor, writing the same Examples faster."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _CsvToSerializedExamples

    def Do(self, input_dict: dict[str, list[types.Artifact]], output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        """BaseExampleGenExecutor.Do (TFX 1.16), each split written by _WriteSplitInOrder on an in-process runner
        (see the module's docstring)."""
        self._log_startup(input_dict, output_dict, exec_properties)
        input_config = proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
                                                 example_gen_pb2.Input())
        output_config = proto_utils.json_to_proto(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
                                                  example_gen_pb2.Output())
        outputs = output_dict[standard_component_specs.EXAMPLES_KEY]
        artifact_utils.get_single_instance(outputs).split_names = artifact_utils.encode_split_names(
            utils.generate_output_split_names(input_config, output_config))
        file_format = exec_properties.get(standard_component_specs.OUTPUT_FILE_FORMAT_KEY,
                                          example_gen_pb2.FILE_FORMAT_UNSPECIFIED)
        payload_format = exec_properties.get(standard_component_specs.OUTPUT_DATA_FORMAT_KEY)

        logging.info("Generating examples.")
        with self._make_beam_pipeline() as pipeline:
            in_order = writes_in_order(pipeline, payload_format)
            for split_name, records in self.GenerateExamplesByBeam(pipeline, exec_properties).items():
                path = artifact_utils.get_split_uri(outputs, split_name)
                _ = records | f"WriteSplit[{split_name}]" >> (
                    _WriteSplitInOrder(path) if in_order
                    else write_split.WriteSplit(path, file_format, exec_properties))
        for artifact in outputs:
            if payload_format:
                examples_utils.set_payload_format(artifact, payload_format)
            if file_format:
                examples_utils.set_file_format(artifact, write_split.to_file_format_str(file_format))
        logging.info("Examples generated.")
