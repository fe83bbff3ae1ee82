"""The component: TFX's file-based ExampleGen running this package's executor, under the node id CsvExampleGen."""
from __future__ import annotations

from google.protobuf import any_pb2, wrappers_pb2
from tfx import v1 as tfx
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec

from components.csv_example_gen import executor


def csv_example_gen(input_base: str, split_buckets: tuple[int, int], code_fingerprint: str) -> FileBasedExampleGen:
    """Reads every CSV file in `input_base`, like tfx.components.CsvExampleGen, into train and eval splits of
    `split_buckets` (train, eval) hash buckets. `code_fingerprint` (of this package) goes into the custom config,
    part of TFX's cache key, which would not otherwise see an edit to the executor."""
    fingerprint = any_pb2.Any()
    fingerprint.Pack(wrappers_pb2.StringValue(value=code_fingerprint))
    train, eval_ = split_buckets
    output_config = tfx.proto.Output(split_config=tfx.proto.SplitConfig(splits=[
        tfx.proto.SplitConfig.Split(name="train", hash_buckets=train),
        tfx.proto.SplitConfig.Split(name="eval", hash_buckets=eval_)]))
    return FileBasedExampleGen(
        input_base=input_base,
        output_config=output_config,
        custom_config=tfx.proto.CustomConfig(custom_config=fingerprint),
        custom_executor_spec=executor_spec.BeamExecutorSpec(executor.Executor),
    ).with_id("CsvExampleGen")
