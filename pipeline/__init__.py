"""tfx-serving-pipeline: the TFX pipeline definition, its configuration, runners and CLI."""
import os

# The one place where the project chooses its Keras. TensorFlow Transform 1.16 sets
# TF_USE_LEGACY_KERAS=1 on import when it is unset, so without this line the Keras that the Trainer
# gets would depend on which module happened to be imported first. We choose tf-keras (Keras 2)
# because Keras 3's fit() does not support MultiWorkerMirroredStrategy (tensorflow/tensorflow#72388).
# Every process that runs our code imports this package before TensorFlow.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
