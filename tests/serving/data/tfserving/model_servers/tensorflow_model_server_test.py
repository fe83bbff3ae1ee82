# Copyright 2016 Google Inc. All Rights Reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
# ==============================================================================

# tfx-serving-pipeline: an excerpt of tensorflow_serving/model_servers/tensorflow_model_server_test.py
# at tensorflow/serving@9d981c5c2708d23c5407c7c1e30309e6f9798874, kept for the test cases the embedded
# server's TF Lite and profiler support must pass: testPredictOnTfLite,
# testPredictWithSignatureDefOnTfLite and test_profiler_service_with_valid_trace_request. Every line
# below is upstream's, unchanged and in order; only the other test methods are left out.

"""Tests for tensorflow_model_server."""

from __future__ import absolute_import
from __future__ import division
from __future__ import print_function

import json
import os
import subprocess
import sys
import time


# During the creation of the 'tensorflow_serving' package, bazel emits a python
# 'tensorflow' module which contains its dependencies (e.g. example.proto).
# Since bazel python libraries take precedence in sys.path and the created
# 'tensorflow' module will not be fully constructed, we reorder the bazel-out
# python libs to take a lower precedence than the pip installed packages.
sys.path = ([i for i in sys.path if 'bazel-out' not in i] +
            [i for i in sys.path if 'bazel-out' in i])



import grpc
from six.moves import range
import tensorflow.compat.v1 as tf

from tensorflow.python.platform import flags
from tensorflow.python.profiler import profiler_client
from tensorflow.python.saved_model import signature_constants
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2
from tensorflow_serving.model_servers.test_util import tensorflow_model_server_test_base

FLAGS = flags.FLAGS

RPC_TIMEOUT = 20.0
GRPC_SOCKET_PATH = '/tmp/tf-serving.sock'


class TensorflowModelServerTest(
    tensorflow_model_server_test_base.TensorflowModelServerTestBase):
  """This class defines integration test cases for tensorflow_model_server."""

  @staticmethod
  def __TestSrcDirPath(relative_path=''):
    return os.path.join(os.environ['TEST_SRCDIR'],
                        'tf_serving/tensorflow_serving', relative_path)

  def __BuildModelConfigFile(self):
    """Write a config file to disk for use in tests.

    Substitutes placeholder for test directory with test directory path
    in the configuration template file and writes it out to another file
    used by the test.
    """
    with open(self._GetGoodModelConfigTemplate(), 'r') as template_file:
      config = template_file.read().replace('${TEST_HALF_PLUS_TWO_DIR}',
                                            self._GetSavedModelBundlePath())
      config = config.replace('${TEST_HALF_PLUS_THREE_DIR}',
                              self._GetSavedModelHalfPlusThreePath())
    with open(self._GetGoodModelConfigFile(), 'w') as config_file:
      config_file.write(config)

  def setUp(self):
    """Sets up integration test parameters."""
    self.testdata_dir = TensorflowModelServerTest.__TestSrcDirPath(
        'servables/tensorflow/testdata')
    self.temp_dir = tf.test.get_temp_dir()
    self.server_proc = None
    self.__BuildModelConfigFile()

  def tearDown(self):
    """Deletes created configuration file."""
    os.remove(self._GetGoodModelConfigFile())

  def testPredictOnTfLite(self):
    """Test saved model prediction on a TF Lite mode."""
    model_server_address = TensorflowModelServerTest.RunServer(
        'default', self._GetTfLiteModelPath(), model_type='tflite')[1]
    self.VerifyPredictRequest(
        model_server_address,
        expected_output=3.0,
        specify_output=False,
        expected_version=self._GetModelVersion(self._GetTfLiteModelPath()))

  def testPredictWithSignatureDefOnTfLite(self):
    """Test saved model prediction on a TF Lite mode."""
    model_server_address = TensorflowModelServerTest.RunServer(
        'default', self._GetTfLiteModelWithSigDefPath(), model_type='tflite')[1]
    self.VerifyPredictRequest(
        model_server_address,
        expected_output=3.0,
        specify_output=False,
        expected_version=self._GetModelVersion(self._GetTfLiteModelPath()))

  def test_profiler_service_with_valid_trace_request(self):
    """Test integration with profiler service by sending tracing requests."""

    # Start model server
    model_path = self._GetSavedModelBundlePath()
    _, grpc_addr, rest_addr = TensorflowModelServerTest.RunServer(
        'default', model_path)

    # Prepare predict request
    url = 'http://{}/v1/models/default:predict'.format(rest_addr)
    json_req = '{"instances": [2.0, 3.0, 4.0]}'

    # In a subprocess, send a REST predict request every second for 3 seconds
    exec_command = ("wget {} --content-on-error=on -O- --post-data  '{}' "
                    "--header='Content-Type:application/json'").format(
                        url, json_req)
    repeat_command = 'for n in {{1..3}}; do {} & sleep 1; done;'.format(
        exec_command)
    proc = subprocess.Popen(
        repeat_command,
        shell=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)

    # Prepare args to ProfilerClient
    logdir = os.path.join(self.temp_dir, 'logs')
    worker_list = ''
    duration_ms = 1000
    num_tracing_attempts = 10
    os.makedirs(logdir)

    # Send a tracing request
    profiler_client.trace(grpc_addr, logdir, duration_ms, worker_list,
                          num_tracing_attempts)

    #  Log stdout & stderr of subprocess issuing predict requests for debugging
    out, err = proc.communicate()
    print("stdout: '{}' | stderr: '{}'".format(out, err))

if __name__ == '__main__':
  tf.enable_eager_execution()
  tf.test.main()
