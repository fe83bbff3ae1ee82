"""The exit codes of every `tfxsp` command: one table, documented once (README "Exit codes").

`tfxsp serve` is the exception: it runs the model server in the foreground and exits as tensorflow_model_server
does (0 after a clean stop, 255 when it cannot start).
"""
OK = 0
FAILED = 1  # a pipeline component failed, or a Kubeflow run ended FAILED, CANCELED or SKIPPED
BAD_INPUT = 2  # bad configuration, input or arguments, or another run holds the pipeline root: nothing was run
NOT_BLESSED = 3  # the Evaluator did not bless the model, so nothing was pushed
NOT_SERVED = 4  # the serving validation failed (rolled back unless probe_rollback=false), or could not validate
UNREACHABLE = 5  # a service the command needs did not answer (Kubeflow Pipelines, the model server of tfxsp predict)
TIMED_OUT = 6  # --wait gave up while the Kubeflow run was still going (the run goes on)
SKEWED = 7  # tfxsp monitor: a feature of the served model's logged requests is over its skew threshold
# `tfxsp run` stopped by signal N (SIGHUP 1, SIGINT 2, SIGTERM 15) exits 128 + N, as a shell reports it.
SIGNALLED = 128

TABLE = {
    OK: "success",
    FAILED: "a pipeline component failed, or the Kubeflow run ended FAILED, CANCELED or SKIPPED",
    BAD_INPUT: "bad configuration, input or arguments, or another tfxsp run holds the pipeline root: nothing was run, "
               "pushed or sent",
    NOT_BLESSED: "the model was not blessed, so nothing was pushed",
    NOT_SERVED: "the serving validation failed: the pushed version was rolled back (unless probe_rollback=false); or "
                "it could not validate (server unreachable, too slow to load, version superseded): nothing rolled "
                "back",
    UNREACHABLE: "Kubeflow Pipelines did not answer, refused, or rejected a request; or no model server answered "
                 "tfxsp predict --via rest|grpc",
    TIMED_OUT: "--wait gave up while the Kubeflow run was still going",
    SKEWED: "tfxsp monitor: a feature of the served model's logged requests is over its skew threshold",
    SIGNALLED: "128 + N: `tfxsp run` was stopped by signal N (129 SIGHUP, 130 SIGINT, 143 SIGTERM)",
}
