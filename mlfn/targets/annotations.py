"""One codec for version metadata kept in platform annotations: a field table maps each
record attribute to its annotation key, both ways."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldTable:
    """`fields` maps record attribute -> annotation key (without the prefix).
    `strings`: annotation values are strings (Kubernetes); otherwise JSON values (OpenWhisk)."""

    prefix: str
    fields: tuple  # ((attribute, key), ...)
    strings: bool = False

    def key(self, attribute: str) -> str:
        return self.prefix + dict(self.fields)[attribute]

    def encode(self, values: dict) -> dict:
        """{attribute: value} -> {annotation key: value}; None values are left out."""
        out = {}
        for attr, key in self.fields:
            value = values.get(attr)
            if value is not None:
                out[self.prefix + key] = str(value) if self.strings else value
        return out

    def decode(self, annotations: dict) -> dict:
        """{annotation key: value} -> {attribute: value} for the keys present."""
        return {attr: annotations[self.prefix + key] for attr, key in self.fields if self.prefix + key in annotations}


def attributes(record: Any, table: FieldTable) -> dict:
    return {attr: getattr(record, attr, None) for attr, _ in table.fields}
