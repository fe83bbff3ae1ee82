"""`tfxsp ui`: the browser dashboard over ML Metadata (pipeline/ui, docs/dashboard.md), in the foreground until
Ctrl-C. It only reads: the store is opened read-only, on the first request that needs it."""
from __future__ import annotations

import ipaddress
import os
import socket

import click

from pipeline.cli import exit_codes
from pipeline.cli.options import fail, load, set_option


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: addresses no other machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@set_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback lets other machines read every run.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to bind.")
@click.option("--metadata-url", default=None, metavar="URL",
              help="The store to read instead of the configured one: a path or sqlite:///path, "
                   "mysql://user:password@host:port/db, grpc://host:port.")
def ui(set_items: tuple[str, ...], host: str, port: int, metadata_url: str | None) -> None:
    """A web dashboard over the runs: graph, data, evaluation, training curves, models, lineage, comparison."""
    from aiohttp import web

    from pipeline.cli import console
    from pipeline.ui.app import make_app
    if metadata_url and "://" not in metadata_url:
        metadata_url = "sqlite://" + os.path.abspath(metadata_url)
    config = load(set_items, metadata_url=metadata_url)
    if not is_loopback(host):
        console.console.print(f"[bold yellow]Warning: binding {host}, not loopback: anyone who can reach this "
                              "machine can read every run, metric and path the dashboard shows (it has no "
                              "login).[/]")
    app = make_app(config)
    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as e:
        fail("Cannot listen:", f"{host}:{port}: {e.strerror}. Choose another with --port.", exit_codes.BAD_INPUT)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    from pipeline.metadata.store import describe_connection
    console.console.print(f"tfxsp ui: http://{shown}:{bound}/ (store: "
                          f"{describe_connection(config.metadata_connection_config())}; Ctrl-C stops)")
    web.run_app(app, sock=sock, print=None, handle_signals=True)
