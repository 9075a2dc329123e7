"""`quantize.mode: auto`: the smallest converted file that passes the accuracy gate.

Every mode of `quantize.auto_modes` but int8-selective is converted and measured (each
through the conversion cache, so a repeated run re-reads its choice without TensorFlow);
the files are ranked by their real size. int8-selective, the slow one (a debugger run and
several conversions), is tried only when plain int8 failed the gate and every smaller
passing file is larger than int8. The pick is the smallest passing file; every other
candidate says why it was not picked.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional

from mlfn.errors import AccuracyGateError, ConfigError, ModelError
from mlfn.output import human_bytes


@dataclass
class Candidate:
    mode: str
    status: str  # picked | rejected (failed the gate) | larger (passed, but a smaller file passed too) | error | skipped
    reason: str  # why, in one line
    size_bytes: Optional[int] = None
    cached: bool = False


def choose_mode(modes: list, convert: Callable[[str], object], gate: Callable[[object], Optional[str]],
                say: Callable[[str], None]) -> tuple:
    """(the picked QuantizeResult, [Candidate dicts]) for `modes`; `convert(mode)` returns a
    QuantizeResult without enforcing the gate, `gate(result)` the reason it fails, or None.
    Raises AccuracyGateError when no candidate passes."""
    results, reasons, errors = {}, {}, {}

    def attempt(mode):
        say(f"auto: trying {mode}")
        try:
            results[mode] = convert(mode)
        except (AccuracyGateError, ConfigError):
            raise
        except ModelError as e:  # this mode does not convert or load: the others may
            errors[mode] = str(e)
            say(f"auto: {mode} failed: {e}")
            return
        reasons[mode] = gate(results[mode])
        say(f"auto: {mode} {human_bytes(results[mode].size_bytes)}, " + (reasons[mode] or "passes the gate"))

    for mode in modes:
        if mode != "int8-selective":
            attempt(mode)
    best = _smallest_passing(results, reasons)
    int8 = results.get("int8")
    if "int8-selective" in modes and (int8 is None or reasons.get("int8")) and (
            best is None or int8 is None or results[best].size_bytes > int8.size_bytes):
        attempt("int8-selective")
        best = _smallest_passing(results, reasons)
    if best is None:
        why = [reasons[m] for m in results if reasons[m]] + [f"{m}: {e}" for m, e in errors.items()]
        raise AccuracyGateError("quantize.mode auto found no mode that passes the gate: " + "; ".join(why) + ".")
    picked = results[best]
    rows = []
    for mode in modes:
        rows.append(asdict(_row(mode, results.get(mode), reasons.get(mode), errors.get(mode), picked, best)))
    return picked, rows


def _smallest_passing(results: dict, reasons: dict) -> Optional[str]:
    passing = [m for m in results if not reasons[m]]
    return min(passing, key=lambda m: results[m].size_bytes) if passing else None


def _row(mode, result, reason, error, picked, best) -> Candidate:
    if error:
        return Candidate(mode, "error", error)
    if result is None:
        return Candidate(mode, "skipped", "not needed: int8 passes the gate, or a file smaller than int8 does")
    size, cached = result.size_bytes, bool(result.cached)
    if mode == best:
        return Candidate(mode, "picked", "the smallest file that passes the gate", size, cached)
    if reason:
        return Candidate(mode, "rejected", reason, size, cached)
    return Candidate(mode, "larger", f"passes, but {human_bytes(size)} is larger than {best}'s "
                                     f"{human_bytes(picked.size_bytes)}", size, cached)
