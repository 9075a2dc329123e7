#!/usr/bin/env bash
# The README demo: from a trained model to a served function with a canary release.
# Run through `make demo` (which installs what it needs first).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
export PATH="$PWD/$VENV/bin:$PATH"
S=samples/digits
IMG="$S/inputs/digit-3.png"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Train the digits sample (a small Keras CNN with Dropout, on scikit-learn's 8x8 digits)"
TF_CPP_MIN_LOG_LEVEL=2 python "$S/train.py" "$S"

step "Quantize it (int8, calibrated) and compare with the Keras model"
TF_CPP_MIN_LOG_LEVEL=2 mlfn quantize -c "$S"

step "Build the function image"
mlfn build -c "$S"

step "Run it locally"
URL=$(mlfn run -c "$S" | head -n1)
echo "the function answers at $URL (its container: read-only root, non-root user)"
trap 'mlfn run --stop -c "$S" >/dev/null 2>&1 || true' EXIT

step "Invoke through the OpenWhisk action protocol (/init, /run)"
echo "predicted label: $(mlfn invoke "$URL" --protocol openwhisk --image "$IMG" | head -n1)"

step "Invoke through the HTTP predict endpoint"
echo "predicted label: $(mlfn invoke "$URL" --image "$IMG" | head -n1)"

step "Start the embedded OpenWhisk-compatible controller on 127.0.0.1:3233"
mlfn local up
mlfn delete digits --yes >/dev/null 2>&1 && echo "(removed what an earlier demo run deployed)" || true

step "Deploy v1 (the first version takes the default alias)"
mlfn deploy -c "$S"

step "Deploy v2 (dynamic-range quantization instead of int8) as a 10% canary"
MLFN_QUANTIZE__MODE=dynamic mlfn deploy -c "$S" --weight 10
mlfn status digits

step "The split, seen from 200 invocations of the default alias"
mlfn invoke digits --image "$IMG" --repeat 200

step "Promote v2 (blue/green: one atomic alias update)"
mlfn promote digits v2
mlfn invoke digits --image "$IMG"

step "Roll back: the alias returns to its previous assignment"
mlfn rollback digits
mlfn status digits

printf '\nDone. The controller keeps running (wsk-compatible API on http://127.0.0.1:3233, guest key);\nstop it with: %s/mlfn local down\n' "$VENV/bin"
