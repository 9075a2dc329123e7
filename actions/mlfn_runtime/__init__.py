"""mlfn_runtime: the code inside every function image (see actions/README.md).

Modules: pipeline (pre/post steps), model (LiteRT runner), function (the data plane),
server (one HTTP server: OpenWhisk, /predict, OIP v2, TF Serving, /metrics), openwhisk,
oip, tfserving, metrics, errors. Nothing heavy is imported here: start-up is on the
critical path of every cold start."""

__version__ = "0.1.0"
