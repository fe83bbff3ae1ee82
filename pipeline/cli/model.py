"""`tfxsp model show [served|latest|VERSION]`: one pushed version inside out. Its SavedModel's signatures (inputs
and outputs with dtypes and shapes, as `saved_model_cli show --all` prints them), and the run, blessing, metrics,
serving validation and data that produced it, from ML Metadata."""
from __future__ import annotations

import os
from typing import Any

import click

from pipeline.cli import console
from pipeline.cli.options import echo_json, fail, guarded, metadata_options, open_metadata
from pipeline.cli.tables import e, yes_no

SELECTORS = ("served", "latest")


@click.group()
def model() -> None:
    """One pushed model version: what it takes and returns, and what produced it."""


@model.command()
@click.argument("which", default="served", metavar="[served|latest|VERSION]")
@metadata_options()
def show(which: str, set_items: tuple[str, ...], metadata_url: str | None, output_format: str | None) -> None:
    """The signatures of a pushed version's SavedModel (like saved_model_cli show --all) and the run, metrics
    and data that produced it. served (the default): the version TF Serving serves from the model base path;
    latest: the newest push; or a version number."""
    from pipeline.metadata import models as api
    config, store, where = open_metadata(set_items, metadata_url)
    found = guarded(lambda: api.list_models(store, config.serving_model_dir))
    chosen = pick_present(found, which, config.serving_model_dir, choices="; or: served, latest",
                          gone=": its signatures cannot be read")
    try:
        signatures = read_signatures(chosen.destination)
    except (OSError, ValueError) as error:
        fail("Unreadable SavedModel:", f"{chosen.destination}: {error}")
    data = _data_of(store, chosen)
    if output_format == "json":
        echo_json({"store": where, "model_base_path": config.serving_model_dir, "model": chosen.to_dict(),
                   "signatures": signatures, "data": data})
        return
    _print(chosen, signatures, data, where)


def pick(found: list, which: str):
    """The ModelVersion that `which` names (served, latest or a version number), or None."""
    if which == "served":
        return next((m for m in found if m.served), None)
    if which == "latest":
        return found[0] if found else None  # newest first
    if not (which.isascii() and which.isdigit()):
        return None
    return next((m for m in found if m.version is not None and int(m.version) == int(which)), None)


def pick_present(found: list, which: str, model_base_path: str, choices: str = "", gone: str = ""):
    """pick(found, which), present in the model base path; or exit 2 saying which versions there are (`choices`:
    what else `which` may be) or that the version's folder is gone (`gone`: what that prevents)."""
    chosen = pick(found, which)
    if chosen is None:
        versions = ", ".join(m.version for m in found if m.version) or "none"
        fail("Unknown version:", f"{which!r} is not a pushed version in {model_base_path} "
                                 f"(pushed versions: {versions}{choices}).")
    if not chosen.present:
        fail("Version gone:", f"version {chosen.version} was pushed to {chosen.destination}, which no longer "
                              f"exists (rolled back or removed){gone}.")
    return chosen


def read_signatures(saved_model_dir: str) -> dict[str, dict[str, Any]]:
    """signature name -> {method, inputs, outputs}, each tensor as {name (the graph tensor), dtype, shape}; read
    from saved_model.pb without loading the model (as saved_model_cli does for its SignatureDef part)."""
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import saved_model_pb2
    path = os.path.join(saved_model_dir, "saved_model.pb")
    with open(path, "rb") as f:
        saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    if not saved_model.meta_graphs:
        raise ValueError("saved_model.pb holds no MetaGraphDef")
    meta_graph = next((m for m in saved_model.meta_graphs if "serve" in m.meta_info_def.tags),
                      saved_model.meta_graphs[0])

    def tensor(info) -> dict[str, Any]:
        shape = None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]
        return {"name": info.name, "dtype": types_pb2.DataType.Name(info.dtype), "shape": shape}

    return {name: {"method": sig.method_name,
                   "inputs": {k: tensor(v) for k, v in sorted(sig.inputs.items())},
                   "outputs": {k: tensor(v) for k, v in sorted(sig.outputs.items())}}
            for name, sig in sorted(meta_graph.signature_def.items()) if not name.startswith("__")}


def _data_of(store, chosen) -> dict[str, Any]:
    """The examples the run read (CsvExampleGen's output of the run that pushed this version)."""
    if chosen.run_id is None:
        return {}
    from pipeline.metadata.report import collect
    try:
        report = collect(store, chosen.run_id)
    except LookupError:
        return {}
    data: dict[str, Any] = {"run_id": chosen.run_id}
    if report.examples_uri:
        data["examples_uri"] = report.examples_uri
        data["splits"] = sorted(d[len("Split-"):] for d in _listdir(report.examples_uri) if d.startswith("Split-"))
    overall = chosen.metrics.get("Overall", {})
    if "example_count" in overall:
        data["eval_examples"] = int(overall["example_count"])
    return data


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def shape_text(shape: list[int] | None) -> str:
    """A shape as saved_model_cli prints it: (-1, 3), or unknown rank."""
    if shape is None:
        return "unknown_rank"
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _print(chosen, signatures: dict[str, dict[str, Any]], data: dict[str, Any], where: str) -> None:
    out = console.console
    state = "served" if chosen.served else "present"
    out.print(f"[bold]Model version {e(chosen.version)}[/] ({state}) at {e(chosen.destination)}")
    out.print(f"  Run: {e(chosen.run_id or '?')}   Model: #{chosen.model_id}   Blessed: {yes_no(chosen.blessed)}")
    overall = chosen.metrics.get("Overall", {})
    if overall:
        out.print("  Eval (overall): " + ", ".join(f"{e(k)} {v:.4g}" for k, v in sorted(overall.items())))
    validation = chosen.serving_validation or {}
    if validation:
        out.print(f"  Serving validation: {e(validation.get('outcome', ''))} {e(validation.get('reason', ''))}")
    if data.get("examples_uri"):
        out.print(f"  Data: {e(data['examples_uri'])} (splits: {e(', '.join(data.get('splits', [])))})")
    for name, sig in signatures.items():
        out.print(f"\nsignature_def['{e(name)}']:")
        for part in ("inputs", "outputs"):
            out.print(f"  The given SavedModel SignatureDef contains the following {part[:-1]}(s):")
            for key, t in sig[part].items():
                out.print(f"    {part}['{e(key)}'] tensor_info:")
                out.print(f"        dtype: {t['dtype']}")
                out.print(f"        shape: {shape_text(t['shape'])}")
                out.print(f"        name: {e(t['name'])}")
        out.print(f"  Method name is: {e(sig['method'])}")
    out.print(f"\n[dim]store: {e(where)}[/]")
