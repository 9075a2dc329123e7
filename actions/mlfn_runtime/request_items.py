"""The inputs of a predict request (actions/README.md), one item per input.

`request_items(request)` -> (field, [(label, raw), ...]) where `raw` is an encoded image
(base64 text, bytes or `{"b64": ...}`), a numeric array without the batch dimension, or
`{input_name: array}` for models with several inputs; `label` names the input in errors
(`images[2]`, `inputs[0]`, ...)."""
from __future__ import annotations

from typing import Any

from mlfn_runtime.errors import InvalidInput
from mlfn_runtime.kafka_batch import message_instances
from mlfn_runtime.tensors import is_b64_object, is_encoded_image, jtype, to_numeric

INPUT_FIELDS = ("image", "images", "instances", "inputs", "messages")


def request_items(request: dict) -> tuple:
    present = [f for f in INPUT_FIELDS if f in request]
    if not present:
        raise InvalidInput(f"the request has no input: send one of {', '.join(repr(f) for f in INPUT_FIELDS)}")
    if len(present) > 1:
        raise InvalidInput(f"send only one of {', '.join(repr(f) for f in present)}")
    key = present[0]
    value = request[key]
    read = {"image": _image, "images": _images, "instances": _instances, "inputs": _inputs, "messages": _messages}[key]
    return key, read(value)


def _image(value: Any) -> list:
    if not isinstance(value, (str, bytes, dict)):
        raise InvalidInput(f"'image' must be a base64-encoded image, not {jtype(value)}")
    return [("image", value)]


def _images(value: Any) -> list:
    if not isinstance(value, list) or not value:
        raise InvalidInput("'images' must be a non-empty list of base64-encoded images")
    for i, v in enumerate(value):
        if not isinstance(v, (str, bytes, dict)):
            raise InvalidInput(f"'images[{i}]' must be a base64-encoded image, not {jtype(v)}")
    return [(f"images[{i}]", v) for i, v in enumerate(value)]


def _instances(value: Any) -> list:
    if not isinstance(value, list) or not value:
        raise InvalidInput("'instances' must be a non-empty list")
    return [_instance(f"instances[{i}]", v) for i, v in enumerate(value)]


def _instance(label: str, v: Any) -> tuple:
    """One instance: an encoded image, {input name: array}, or an array."""
    if is_encoded_image(v):
        return label, v
    if isinstance(v, dict):
        return label, {k: to_numeric(x, f"{label}.{k}") for k, x in v.items()}
    return label, to_numeric(v, label)


def _messages(value: Any) -> list:
    """A Kafka-feed batch (mlfn_runtime.kafka_batch): one input per message, in order."""
    return [_instance(label, v) for label, v in message_instances(value)]


def _inputs(value: Any) -> list:
    """A tensor with the batch dimension, or {input name: tensor}."""
    if isinstance(value, dict) and not is_b64_object(value):
        if not value:
            raise InvalidInput("'inputs' is an empty object; send {input_name: tensor, ...} or a tensor")
        arrays = {k: to_numeric(x, f"inputs.{k}", batch=True) for k, x in value.items()}
        sizes = {a.shape[0] for a in arrays.values()}
        if len(sizes) != 1:
            raise InvalidInput(f"'inputs' tensors need the same batch size, got {sorted(sizes)}")
        return [(f"inputs[{i}]", {k: a[i] for k, a in arrays.items()}) for i in range(sizes.pop())]
    arr = to_numeric(value, "inputs", batch=True)
    return [(f"inputs[{i}]", arr[i]) for i in range(arr.shape[0])]
