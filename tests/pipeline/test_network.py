"""What TensorFlow 2.16 binds for a training cluster's server, and what the loopback-only namespace changes: the facts
docs/limits-and-security.md states, checked on this machine's TensorFlow. A TensorFlow that let a caller choose the
address would fail the first test, and the docs (and the launcher's warning) would have to change."""
import os
import subprocess
import sys
import textwrap

import pytest

from pipeline.training import network
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.timeout(300)

# Starts a tf.distribute.Server whose cluster spec names 127.0.0.1, prints what listens on its port (seen from its own
# network namespace), then waits for its stdin to close.
SERVER = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    from pipeline.training import network
    [port] = network.free_ports(1)
    cluster = tf.train.ClusterSpec({"worker": [f"127.0.0.1:{port}"]})
    server = tf.distribute.Server(cluster, job_name="worker", task_index=0, protocol="grpc", start=True)
    print(port, *network.listening_sockets([port]), flush=True)
    sys.stdin.read()
""")


def _start(argv):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, env=env, cwd=REPO_ROOT)
    port, *listening = process.stdout.readline().split()
    return process, int(port), listening


def _stop(process):
    process.stdin.close()
    process.kill()
    process.wait(30)


def test_a_tensorflow_server_listens_on_every_interface_whatever_address_the_cluster_names():
    process, port, listening = _start([sys.executable, "-c", SERVER])
    try:
        assert listening in ([f"[::]:{port}"], [f"0.0.0.0:{port}"]), listening
        assert network.listening_sockets([port]) == listening  # this test shares the host's network
    finally:
        _stop(process)


@pytest.mark.skipif(not network.can_isolate(), reason=f"no loopback-only namespace here: {network.why_not_isolated()}")
def test_in_a_loopback_only_namespace_the_same_server_is_not_on_the_hosts_network():
    process, port, listening = _start(network.isolated_argv([sys.executable, "-c", SERVER]))
    try:
        assert listening == [f"[::]:{port}"] or listening == [f"0.0.0.0:{port}"], listening  # inside: every interface
        assert network.listening_sockets([port]) == []  # of a namespace whose only interface is loopback
    finally:
        _stop(process)
