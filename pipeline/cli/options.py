"""What every `tfxsp` command shares: the --set option and loading the configuration, the metadata commands'
--metadata-url and --format, opening the store, and failing with one paragraph and the right exit code."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from pipeline.cli import exit_codes
from pipeline.config import (
    CONFIG_FILE,
    ConfigError,
    PipelineConfig,
    default_config_file,
    load_config,
    parse_set_options,
)

set_option = click.option(
    "--set", "set_items", multiple=True, metavar="KEY=VALUE",
    help="Override a setting of pipeline/config.py (repeatable), e.g. --set epochs=5.")


def fail(title: str, message: str, code: int = exit_codes.BAD_INPUT) -> NoReturn:
    """Prints one paragraph to stderr ([brackets] in the message are text) and exits with `code`."""
    from pipeline.cli import console
    console.print_error(title, message)
    sys.exit(code)


config_option = click.option(
    "--config", "config_file", default=None, metavar="FILE", type=click.Path(dir_okay=False, exists=True),
    help=f"A config file (TOML; tfxsp init writes one).  [default: ./{CONFIG_FILE} when there is one]")


def load(set_items: tuple[str, ...] = (), config_file: str | None = None, use_config_file: bool = True,
         **overrides: str | None) -> PipelineConfig:
    """The validated configuration: defaults < the config file (`config_file`, else ./tfxsp.toml when there is one
    and use_config_file) < TFXSP_* < these --set items and overrides given by other options; or exit 2."""
    try:
        values = parse_set_options(list(set_items))
        values.update({k: v for k, v in overrides.items() if v is not None})
        path = config_file or (default_config_file() if use_config_file else None)
        return load_config(values, config_file=path)
    except ConfigError as e:
        from pipeline.cli.redaction import redact
        fail("Configuration error:", redact(str(e), []))  # a bad mysql:// URL may hold a password


def metadata_options(formats: tuple[str, ...] = ("table", "json")) -> Callable:
    """--format, --metadata-url and --set, for the commands that read ML Metadata."""
    def decorate(command: Callable) -> Callable:
        command = click.option(
            "--format", "output_format", type=click.Choice(formats), default=None,
            help="table (the default) for people, json for scripts"
                 + (", dot/svg/html for a picture." if "svg" in formats else "."))(command)
        command = click.option(
            "--metadata-url", default=None, metavar="URL",
            help="The store to read instead of the configured one: a path or sqlite:///path, "
                 "mysql://user:password@host:port/db (or ?unix_socket=PATH, ?password_file=PATH), "
                 "grpc://host:port.")(command)
        return set_option(command)
    return decorate


def open_metadata(set_items: tuple[str, ...], metadata_url: str | None):
    """(config, store opened read-only, where it is) or exit 2 with the reason."""
    from pipeline.metadata import store
    if metadata_url and "://" not in metadata_url:
        metadata_url = "sqlite://" + os.path.abspath(metadata_url)
    config = load(set_items, metadata_url=metadata_url)
    connection = config.metadata_connection_config()
    return config, guarded(lambda: store.open_store(connection)), store.describe_connection(connection)


def guarded(call: Callable[[], Any]) -> Any:
    """call(), or exit 2 with the message of the MetadataError it raised."""
    from pipeline.metadata import store
    try:
        return call()
    except store.MetadataError as e:
        titles = {store.StoreNotFoundError: "No metadata store:", store.CorruptStoreError: "Corrupt metadata store:",
                  store.EmptyStoreError: "Empty metadata store:", store.NotFoundError: "Not found:"}
        fail(titles.get(type(e), "Metadata error:"), str(e))


def echo_json(value: Any) -> None:
    import orjson
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS)
               .decode())
