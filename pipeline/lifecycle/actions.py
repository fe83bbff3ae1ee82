"""label, promote, pin, unpin and rollback: what each makes the model config file say, checked against the pushed
versions in ML Metadata, written, applied live when a server answers, and recorded in ML Metadata.

Every check runs before anything is written; a server that refuses the new config gets the old one back and the
file is restored, so a refused action changes nothing.
"""
from __future__ import annotations

import dataclasses
import json
import os

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from pipeline.config import PipelineConfig
from pipeline.lifecycle import model_config as files
from pipeline.metadata import models as models_api
from pipeline.metadata.properties import MODEL_ACTION_TYPE
from pipeline.metadata.store import open_store

STABLE, CANARY = "stable", "canary"


class ActionError(Exception):
    """Bad input or a refusal: the message says why; nothing was changed."""


@dataclasses.dataclass
class Outcome:
    action: str
    before: files.Serving
    after: files.Serving
    config_file: str
    live: bool  # applied to a server that answered, not only written
    message: str
    execution_id: int | None = None


@dataclasses.dataclass
class _Situation:
    config: PipelineConfig
    versions: list[models_api.ModelVersion]
    current: files.Serving

    def pushed(self, version: int) -> models_api.ModelVersion:
        """The pushed version `version`, which must be present, blessed and not failed its serving validation."""
        found = next((m for m in self.versions if m.version is not None and int(m.version) == version), None)
        known = ", ".join(m.version for m in self.versions if m.version) or "none"
        if found is None:
            raise ActionError(f"version {version} was never pushed to {self.config.serving_model_dir} "
                              f"(pushed versions: {known})")
        if not found.present:
            quarantine = os.path.join(self.config.serving_model_dir + ".quarantine", str(version))
            where = (f"it was rolled back to {quarantine} (quarantined)" if os.path.exists(quarantine)
                     else f"its folder {found.destination} is gone")
            raise ActionError(f"version {version} cannot be served: {where}")
        if found.blessed is not True:
            raise ActionError(f"version {version} is not blessed by the Evaluator")
        validation = found.serving_validation or {}
        if validation.get("outcome") == "failed" or validation.get("rolled_back"):
            raise ActionError(f"version {version} failed its serving validation: {validation.get('reason', '')}")
        return found

    def present_blessed(self) -> list[int]:
        return sorted(int(m.version) for m in self.versions if m.version and m.present and m.blessed is True
                      and (m.serving_validation or {}).get("outcome") != "failed")


def label(config: PipelineConfig, version: int, name: str) -> Outcome:
    _check_label_name(name)

    def change(s: _Situation) -> tuple[files.Serving, list[int], str]:
        s.pushed(version)
        if s.current.pinned is not None and version > s.current.pinned:
            raise ActionError(f"version {version} is newer than the pinned version {s.current.pinned}: unversioned "
                              "requests would go to it (TF Serving answers them with the highest loaded "
                              "version); unpin first (tfxsp models unpin)")
        after = dataclasses.replace(s.current, labels={**s.current.labels, name: version})
        return after, [version], f"label {name!r} -> version {version}"
    return _act(config, "label", change, version=version, label=name)


def promote(config: PipelineConfig, source: str = CANARY, target: str = STABLE) -> Outcome:
    def change(s: _Situation) -> tuple[files.Serving, list[int], str]:
        if source not in s.current.labels:
            raise ActionError(f"no version has the label {source!r} (labels: "
                              f"{_labels_text(s.current.labels)}); label one first: tfxsp models label VERSION "
                              f"{source}")
        version = s.current.labels[source]
        s.pushed(version)
        labels = {k: v for k, v in s.current.labels.items() if k != source}
        labels[target] = version
        return (dataclasses.replace(s.current, labels=labels), [version],
                f"{target!r} -> version {version} (was {s.current.labels.get(target, 'unset')}); {source!r} removed")
    return _act(config, "promote", change, label=target)


def pin(config: PipelineConfig, version: int) -> Outcome:
    def change(s: _Situation) -> tuple[files.Serving, list[int], str]:
        s.pushed(version)
        above = {k: v for k, v in s.current.labels.items() if v > version}
        if above:
            raise ActionError(f"label(s) {_labels_text(above)} point above version {version}: unversioned requests "
                              "would go there (TF Serving answers them with the highest loaded version); use "
                              f"tfxsp models rollback --to {version}, which moves them")
        return (dataclasses.replace(s.current, pinned=version), [version],
                f"pinned to version {version}: new pushes are not served until unpin")
    return _act(config, "pin", change, version=version)


def unpin(config: PipelineConfig) -> Outcome:
    def change(s: _Situation) -> tuple[files.Serving, list[int], str]:
        if s.current.pinned is None:
            raise ActionError("no version is pinned")
        newest = max((int(m.version) for m in s.versions if m.version and m.present), default=None)
        return (dataclasses.replace(s.current, pinned=None), [newest] if newest else [],
                f"unpinned from version {s.current.pinned}: the newest version ({newest}) is served")
    return _act(config, "unpin", change)


def rollback(config: PipelineConfig, to: int | None = None) -> Outcome:
    """Serves the previous blessed version (or `to`) by pinning it; labels on newer versions move to it."""
    def change(s: _Situation) -> tuple[files.Serving, list[int], str]:
        serving_now = s.current.pinned or next((int(m.version) for m in s.versions if m.served), None)
        if to is not None:
            target = to
        else:
            older = [v for v in s.present_blessed() if serving_now is None or v < serving_now]
            if not older:
                raise ActionError(f"no blessed version older than version {serving_now} is in "
                                  f"{s.config.serving_model_dir} to roll back to")
            target = older[-1]
        s.pushed(target)
        if serving_now is not None and target == serving_now:
            raise ActionError(f"version {target} is already the served version")
        moved = {k: v for k, v in s.current.labels.items() if v > target}
        labels = {**s.current.labels, **{k: target for k in moved}}
        newer = sorted(int(m.version) for m in s.versions if m.version and m.present and int(m.version) > target)
        what = (f"served: version {target} (pinned). Version(s) {', '.join(map(str, newer))} stay in the model "
                "base path, not served (unloaded) until tfxsp models unpin" if newer else
                f"served: version {target} (pinned)")
        if moved:
            what += f"; label(s) {', '.join(sorted(moved))} moved to version {target}"
        return dataclasses.replace(s.current, pinned=target, labels=labels), [target], what
    return _act(config, "rollback", change, version=to)


# --------------------------------------------------------------------------------------------------------------


def _check_label_name(name: str) -> None:
    # TF Serving's REST path /labels/<label> and a text proto map key: keep to a plain word.
    if not name or not all(c.isalnum() or c in "-_" for c in name) or name.isdigit():
        raise ActionError(f"label {name!r}: a label is a word of letters, digits, '-' and '_' (not a number)")


def _labels_text(labels: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none"


def _act(config: PipelineConfig, action: str, change, version: int | None = None,
         label: str | None = None) -> Outcome:
    path, name, base_path = config.model_config_file, config.model_name, config.serving_model_dir
    store = open_store(config.metadata_connection_config())
    versions = models_api.list_models(store, base_path)
    live = files.Live(config.grpc_target)
    try:
        answering = live.answers(name)
        exists = os.path.exists(path)
        if not answering and not exists:
            raise ActionError(f"no model server answers at {config.grpc_target} and there is no model config file "
                              f"{path}: start one (tfxsp serve, or make serve), which writes that file")
        old = files.read(path) if exists else files.default_config(name, base_path)
        current = files.serving_of(files.entry_of(old, name, path))
        after, must_load, message = change(_Situation(config, versions, current))
        new = files.with_serving(old, name, path, after)
        old_text = open(path, encoding="utf-8").read() if exists else None
        files.write(path, new)  # first, so that a server polling the file agrees with what is applied live
        if answering:
            try:
                files.apply_live(live, name, path, old, new, must_load, config.probe_deadline_s)
            except files.ServerRejected as e:
                _restore(path, old_text)
                raise ActionError(f"the model server at {config.grpc_target} refused the new config: {e}") from None
    finally:
        live.close()
    outcome = Outcome(action, current, after, path, answering, message)
    outcome.execution_id = _record(config, outcome, versions, version if version is not None else
                                   _version_of(after, label))
    return outcome


def _version_of(after: files.Serving, label: str | None) -> int | None:
    if label is not None:
        return after.labels.get(label)
    return after.pinned


def _restore(path: str, old_text: str | None) -> None:
    if old_text is None:
        os.unlink(path)
        return
    temporary = path + ".restore"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(old_text)
    os.replace(temporary, path)


def _record(config: PipelineConfig, outcome: Outcome, versions: list[models_api.ModelVersion],
            version: int | None) -> int:
    """An execution of type tfxsp.ModelAction, its INPUT the PushedModel of the version it concerns, in the
    pipeline's context (so that lineage and tfxsp models see it)."""
    store = metadata_store.MetadataStore(config.metadata_connection_config())
    action_type = mlmd.ExecutionType(name=MODEL_ACTION_TYPE)
    for key in ("action", "config_file", "policy", "labels", "message"):
        action_type.properties[key] = mlmd.STRING
    for key in ("version", "pinned", "live"):
        action_type.properties[key] = mlmd.INT
    type_id = store.put_execution_type(action_type, can_add_fields=True)
    execution = mlmd.Execution(type_id=type_id, last_known_state=mlmd.Execution.COMPLETE)
    props = execution.properties
    props["action"].string_value = outcome.action
    props["config_file"].string_value = outcome.config_file
    props["policy"].string_value = outcome.after.policy()
    props["labels"].string_value = json.dumps(outcome.after.labels, sort_keys=True)
    props["message"].string_value = outcome.message
    props["live"].int_value = int(outcome.live)
    if outcome.after.pinned is not None:
        props["pinned"].int_value = outcome.after.pinned
    pairs = []
    pushed = next((m for m in versions if version is not None and m.version and int(m.version) == version), None)
    if pushed is not None:
        props["version"].int_value = version
        [artifact] = store.get_artifacts_by_id([pushed.pushed_model_id])
        event = mlmd.Event(type=mlmd.Event.INPUT)
        event.path.steps.add().key = "pushed_model"
        event.path.steps.add().index = 0
        pairs.append((artifact, event))
    context = store.get_context_by_type_and_name("pipeline", config.pipeline_name)
    execution_id, _, _ = store.put_execution(execution, pairs, [context] if context else [])
    return execution_id


def history(store: metadata_store.MetadataStore) -> list[dict]:
    """The recorded actions, oldest first."""
    try:
        executions = store.get_executions_by_type(MODEL_ACTION_TYPE)
    except Exception:  # the type does not exist before the first action
        return []
    result = []
    for execution in sorted(executions, key=lambda x: x.id):
        p = execution.properties
        result.append({"id": execution.id, "action": p["action"].string_value,
                       "version": p["version"].int_value if "version" in p else None,
                       "policy": p["policy"].string_value, "labels": json.loads(p["labels"].string_value or "{}"),
                       "live": bool(p["live"].int_value), "message": p["message"].string_value,
                       "time_ms": execution.create_time_since_epoch})
    return result
