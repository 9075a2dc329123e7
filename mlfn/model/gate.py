"""The accuracy gate: quantize.max_accuracy_drop (classifiers) and
quantize.max_mse_increase_pct (regression models) over an evaluation report
(`mlfn.model.evaluate.evaluate`). `mlfn quantize` raises on a failed gate; `auto`,
`int8-selective` and `--compare` read the reason instead."""
from __future__ import annotations

from typing import Optional

from mlfn.errors import AccuracyGateError


def gate_applies(max_drop: Optional[float], max_mse_pct: Optional[float], evaluation: Optional[dict]) -> bool:
    """A configured gate measures this model (its task's metric is in the report)."""
    ev = evaluation or {}
    return (max_drop is not None and "accuracy_drop" in ev) or (max_mse_pct is not None and "mse_increase_pct" in ev)


def gate_reason(mode: str, max_drop: Optional[float], max_mse_pct: Optional[float],
                evaluation: Optional[dict]) -> Optional[str]:
    """Why `mode` fails the gate, in one line (None when it passes or no gate applies), e.g.
    'int8: top-1 91.20% (-7.40 points) exceeds quantize.max_accuracy_drop 1'."""
    ev = evaluation or {}
    pct = ev.get("mse_increase_pct")
    if max_mse_pct is not None and pct is not None and pct > max_mse_pct:
        return (f"{mode}: MSE {ev['converted']['mse']:.6g} ({pct:+.2f}% against the original) exceeds "
                f"quantize.max_mse_increase_pct {max_mse_pct:g}")
    drop = ev.get("accuracy_drop")
    if max_drop is not None and drop is not None and drop > max_drop:
        return (f"{mode}: top-1 {ev['converted']['accuracy']:.2f}% ({-drop:+.2f} points) exceeds "
                f"quantize.max_accuracy_drop {max_drop:g}")
    return None


def gate_warnings(max_drop: Optional[float], max_mse_pct: Optional[float], evaluation: Optional[dict]) -> list:
    """Why a configured gate is not checked on this model (a gate never passes silently)."""
    ev = evaluation or {}
    out = []
    measured = "accuracy_drop" in ev or "mse_increase" in ev
    for key, value, applies in (("max_accuracy_drop", max_drop, "accuracy_drop"),
                                ("max_mse_increase_pct", max_mse_pct, "mse_increase")):
        if value is None or applies in ev:
            continue
        if not measured:
            out.append(f"quantize.{key} is not checked: set quantize.validation_data so both models can be measured.")
        elif applies == "accuracy_drop":
            out.append("quantize.max_accuracy_drop does not apply: this is a regression model, measured by MSE; "
                       "set quantize.max_mse_increase_pct instead.")
        else:
            out.append("quantize.max_mse_increase_pct does not apply: this is a classifier, measured by accuracy; "
                       "set quantize.max_accuracy_drop instead.")
    return out


def enforce_gate(result, max_drop: Optional[float], max_mse_pct: Optional[float], note: str = "") -> None:
    """Raise AccuracyGateError when the QuantizeResult `result` lost more than allowed
    (`note`, a sentence, is appended to the message)."""
    ev = result.evaluation or {}
    pct = ev.get("mse_increase_pct")
    if max_mse_pct is not None and pct is not None and pct > max_mse_pct:
        raise AccuracyGateError(
            f"The {result.mode} model of {result.source} has MSE {ev['converted']['mse']:.6g} against "
            f"{ev['original']['mse']:.6g} for the original, {pct:.2f}% more, beyond "
            f"quantize.max_mse_increase_pct ({max_mse_pct:g})." + (f" {note}" if note else "")
        )
    if max_drop is None or "accuracy_drop" not in ev:
        return
    drop = ev["accuracy_drop"]
    if drop > max_drop:
        raise AccuracyGateError(
            f"The {result.mode} model of {result.source} scores {ev['converted']['accuracy']:.2f}% top-1 "
            f"against {ev['original']['accuracy']:.2f}% for the original, a drop of {drop:.2f} points, "
            f"more than quantize.max_accuracy_drop ({max_drop:g}) allows." + (f" {note}" if note else "")
        )
