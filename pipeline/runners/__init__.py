"""The runners: thin bindings of the configuration to create_pipeline. local.py runs it here (LocalDagRunner);
kubeflow.py compiles it for Kubeflow Pipelines 2 (KubeflowV2DagRunner) and kubeflow_submit.py submits runs."""
