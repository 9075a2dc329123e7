#!/bin/sh
# Regenerates actions/mlfn_runtime/oip_grpc/open_inference_grpc.desc, the compiled
# descriptor of the vendored Open Inference Protocol gRPC definition
# (tests/specs/oip/open_inference_grpc.proto), with grpcio-tools' protoc.
# The runtime (and mlfn's client) build their message classes from it in a private
# descriptor pool, so they never clash with another library's copy of the same proto
# (tritonclient, kserve) in one process. Never edit the output by hand: rerun this.
#   usage: scripts/gen_grpc.sh [python]   (python with grpcio-tools; default .venv/bin/python)
set -eu
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"
"$PY" -m grpc_tools.protoc -I tests/specs/oip \
    --descriptor_set_out=actions/mlfn_runtime/oip_grpc/open_inference_grpc.desc \
    open_inference_grpc.proto
echo "wrote actions/mlfn_runtime/oip_grpc/open_inference_grpc.desc"
