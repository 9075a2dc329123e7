"""A Kafka-feed batch, as OpenWhisk's messaging feed (`/whisk.system/messaging/messageHubFeed`)
delivers it: `{"messages": [{"topic", "partition", "offset", "key", "value"}, ...]}`.

Every message is one input of one batch (one interpreter call), and the answer holds one
prediction per message, in the messages' order. A message `value` is:
- a JSON object holding one input in a predict request's shape (`{"image": ...}`,
  `{"instances": [x]}`, `{"inputs": [x]}`, `{"images": [x]}`), or that object as JSON text
  (the feed's `isJSONData: false`);
- base64 text of an image (the feed's `isBinaryValue: true`), or `{"b64": ...}`;
- a nested list of numbers (one input without the batch dimension)."""
from __future__ import annotations

import json
from typing import Any

from mlfn_runtime.errors import InvalidInput
from mlfn_runtime.tensors import is_b64_object, jtype

ONE_INPUT_FIELDS = ("image", "images", "instances", "inputs")


def message_instances(messages: Any) -> list:
    """[(label, instance)] of a feed batch: what `instances` would hold, one per message."""
    if not isinstance(messages, list) or not messages:
        raise InvalidInput("'messages' must be a non-empty list of Kafka messages")
    out = []
    for i, message in enumerate(messages):
        label = f"messages[{i}]"
        if not isinstance(message, dict) or "value" not in message:
            raise InvalidInput(f"'{label}' must be a Kafka message object with a 'value'")
        out.append((label, _instance(message["value"], f"{label}.value")))
    return out


def _instance(value: Any, label: str) -> Any:
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise InvalidInput(f"'{label}' is neither base64 nor a JSON object: {e}") from None
    if isinstance(value, (str, list)) or is_b64_object(value):
        return value
    if not isinstance(value, dict):
        raise InvalidInput(f"'{label}' must be an image (base64), a JSON request or a list of numbers, not {jtype(value)}")
    present = [f for f in ONE_INPUT_FIELDS if f in value]
    if len(present) != 1:
        raise InvalidInput(f"'{label}' must hold exactly one of {', '.join(ONE_INPUT_FIELDS)}")
    field = present[0]
    inner = value[field]
    if field == "image":
        return inner
    if not isinstance(inner, list) or len(inner) != 1:
        raise InvalidInput(f"'{label}.{field}' must hold exactly one input (one message is one input)")
    return inner[0]
