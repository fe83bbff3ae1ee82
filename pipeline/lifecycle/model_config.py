"""The TF Serving model config file of our model: what it says (version policy, labels), what a label, pin or
rollback makes it say, writing it, and applying it live to a server.

The file is a text-format `tensorflow.serving.ModelServerConfig`, the one `--model_config_file` reads and
`--model_config_file_poll_wait_seconds` re-reads, so it works the same with the embedded server and the real
`tensorflow_model_server`. Only our model's `model_version_policy` and `version_labels` are changed: every other
field and model in the file is kept as it is.

The policy follows from the pin and the labels, because TF Serving serves a label only on a loaded version and
answers an unversioned request with the highest loaded one:
  no pin, no label -> latest { num_versions: 1 } (TF Serving's default: each new push is served);
  no pin, labels   -> all (new pushes are still served, and every labelled version stays loaded);
  pin N            -> specific { N and the labelled versions }, which are all at most N (checked by the caller).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

TENSORFLOW_PLATFORM = "tensorflow"


class ModelConfigError(Exception):
    """The file cannot be read or does not describe our model; the message says which and why."""


class ServerRejected(Exception):
    """The server answered HandleReloadConfigRequest with an error (its message); nothing was changed."""


@dataclasses.dataclass(frozen=True)
class Serving:
    """What the file says for one model: a pinned version (None: not pinned) and its labels."""
    pinned: int | None
    labels: dict[str, int]

    def policy(self) -> str:
        if self.pinned is not None:
            return "specific " + ",".join(str(v) for v in self.loaded_versions())
        return "all" if self.labels else "latest 1"

    def loaded_versions(self) -> list[int]:
        """The versions the policy names (pinned only; else whichever are on disk)."""
        return sorted({self.pinned, *self.labels.values()} - {None}) if self.pinned is not None else []


def default_config(model_name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    """What `--model_name`/`--model_base_path` stand for: one model, latest version."""
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add()
    entry.name, entry.base_path, entry.model_platform = model_name, base_path, TENSORFLOW_PLATFORM
    return config


def read(path: str) -> model_server_config_pb2.ModelServerConfig:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ModelConfigError(f"cannot read the model config file {path}: {e.strerror}") from None
    try:
        return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as e:
        raise ModelConfigError(f"the model config file {path} is not a text-format ModelServerConfig: {e}") from None


def entry_of(config: model_server_config_pb2.ModelServerConfig, model_name: str,
             path: str) -> model_server_config_pb2.ModelConfig:
    for entry in config.model_config_list.config:
        if entry.name == model_name:
            return entry
    raise ModelConfigError(f"the model config file {path} has no model named {model_name!r}")


def serving_of(entry: model_server_config_pb2.ModelConfig) -> Serving:
    """The pin and labels of an entry. A `specific` policy is a pin on its highest version (the one that answers
    unversioned requests); `latest` and `all` are no pin."""
    policy = entry.model_version_policy
    pinned = max(policy.specific.versions) if policy.WhichOneof("policy_choice") == "specific" and \
        policy.specific.versions else None
    return Serving(pinned=pinned, labels=dict(entry.version_labels))


def with_serving(config: model_server_config_pb2.ModelServerConfig, model_name: str, path: str,
                 serving: Serving) -> model_server_config_pb2.ModelServerConfig:
    """A copy of `config` whose entry for `model_name` has the policy and labels of `serving`."""
    result = model_server_config_pb2.ModelServerConfig()
    result.CopyFrom(config)
    entry = entry_of(result, model_name, path)
    entry.ClearField("model_version_policy")
    if serving.pinned is not None:
        entry.model_version_policy.specific.versions.extend(serving.loaded_versions())
    elif serving.labels:
        entry.model_version_policy.all.SetInParent()
    else:
        entry.model_version_policy.latest.num_versions = 1
    entry.ClearField("version_labels")
    for label, version in sorted(serving.labels.items()):
        entry.version_labels[label] = version
    return result


def write(path: str, config: model_server_config_pb2.ModelServerConfig) -> None:
    """Writes the file atomically (a temporary file renamed over it): a server polling it never reads half."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".model_config.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("# Written by tfxsp models (label, promote, pin, unpin, rollback); read by the model server\n"
                    "# (--model_config_file). Other fields and models are kept as they are.\n")
            f.write(text_format.MessageToString(config))
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def ensure(path: str, model_name: str, base_path: str) -> bool:
    """Writes the default file (latest version of our model) when there is none; whether it wrote one."""
    if os.path.exists(path):
        return False
    write(path, default_config(model_name, base_path))
    return True


# ------------------------------------------------------------------------------------------- live server


class Live:
    """A model server's ModelService over gRPC: its versions' states, and HandleReloadConfigRequest."""

    def __init__(self, target: str, timeout_s: float = 10.0):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc
        self.target, self.timeout_s = target, timeout_s
        self._channel = grpc.insecure_channel(target)
        self._stub = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def answers(self, model_name: str, wait_s: float = 2.0) -> bool:
        """Whether a model server answers at the target (about this model or not)."""
        import grpc
        try:
            grpc.channel_ready_future(self._channel).result(timeout=wait_s)
        except grpc.FutureTimeoutError:
            return False
        try:
            self.states(model_name)
        except grpc.RpcError as e:
            return e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)
        return True

    def states(self, model_name: str) -> dict[int, str]:
        from tensorflow_serving.apis import get_model_status_pb2
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model_name
        response = self._stub.GetModelStatus(request, timeout=self.timeout_s)
        return {s.version: get_model_status_pb2.ModelVersionStatus.State.Name(s.state)
                for s in response.model_version_status}

    def reload(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        import grpc
        from tensorflow_serving.apis import model_management_pb2
        request = model_management_pb2.ReloadConfigRequest()
        request.config.CopyFrom(config)
        try:
            response = self._stub.HandleReloadConfigRequest(request, timeout=max(self.timeout_s, 60.0))
        except grpc.RpcError as e:
            raise ServerRejected(f"{e.code().name}: {e.details()}") from None
        if response.status.error_code:
            raise ServerRejected(response.status.error_message or f"error code {response.status.error_code}")

    def wait_available(self, model_name: str, versions: list[int], deadline_s: float) -> dict[int, str]:
        """Waits until every version in `versions` is AVAILABLE; the last states seen (the caller checks)."""
        give_up = time.monotonic() + deadline_s
        while True:
            states = self.states(model_name)
            if all(states.get(v) == "AVAILABLE" for v in versions) or time.monotonic() >= give_up:
                return states
            time.sleep(0.2)

    def close(self) -> None:
        self._channel.close()


def apply_live(live: Live, model_name: str, path: str, old: model_server_config_pb2.ModelServerConfig,
               new: model_server_config_pb2.ModelServerConfig, must_load: list[int], deadline_s: float) -> None:
    """Applies `new` in two steps, as TF Serving requires (a label may point only at a version that is already
    loaded): first the new policy with only the labels whose versions are loaded now, then, once every version
    in `must_load` is AVAILABLE, the labels too. On any error the server gets `old` back and ServerRejected says
    why."""
    states = live.states(model_name)
    first = model_server_config_pb2.ModelServerConfig()
    first.CopyFrom(new)  # the new policy as it is; only the labels of versions not loaded yet are left out
    entry = entry_of(first, model_name, path)
    for label in [k for k, v in entry.version_labels.items() if states.get(v) != "AVAILABLE"]:
        del entry.version_labels[label]
    try:
        live.reload(first)
        states = live.wait_available(model_name, must_load, deadline_s)
        missing = [v for v in must_load if states.get(v) != "AVAILABLE"]
        if missing:
            raise ServerRejected(f"version(s) {', '.join(map(str, missing))} did not become AVAILABLE within "
                                 f"{deadline_s:g} s (states: {states})")
        live.reload(new)
    except ServerRejected:
        try:
            live.reload(old)
        except ServerRejected:
            pass  # the server keeps what it had; the first error is the one to report
        raise
