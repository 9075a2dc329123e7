"""Rendering results: JSON on stdout with `--output json`, a short table or text
otherwise. Logs and progress go to stderr so commands chain in CI. (The `--output` option
itself is declared in mlfn.commands.options.)"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import Any, Callable, Iterable, Sequence

import click


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return obj.tolist()
    if hasattr(obj, "__fspath__"):
        return str(obj)
    return obj


def emit(result: Any, output: str, text: Callable[[Any], str] | None = None) -> None:
    """Print `result` as JSON (`--output json`) or through `text` (default: JSON, indented)."""
    if output == "json":
        click.echo(json.dumps(to_jsonable(result), indent=2, sort_keys=False))
    elif text is not None:
        rendered = text(result)
        if rendered:
            click.echo(rendered)
    else:
        click.echo(json.dumps(to_jsonable(result), indent=2))


def emit_error(kind: str, message: str, exit_code: int, output: str) -> None:
    """With `--output json`, a failure as one JSON document on stdout (the sentence itself
    goes to stderr, as for text output): {"error": {"message", "type", "exit_code"}}."""
    if output == "json":
        click.echo(json.dumps({"error": {"message": message, "type": kind, "exit_code": exit_code}}, indent=2))


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain left-aligned table, like `kn service list`."""
    rows = [["" if c is None else str(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    fmt = "   ".join("{:<%d}" % w for w in widths)
    lines = [fmt.format(*headers).rstrip()]
    lines += [fmt.format(*r).rstrip() for r in rows]
    return "\n".join(lines)


def human_bytes(n: float | int | None) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


class Progress:
    """Progress lines on stderr: `Progress.step("Converting model")` ... `.done()`.

    Library code takes an optional `progress: Callable[[str], None]`; the CLI passes
    `log` so messages reach stderr, tests pass a list's append."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._t0 = time.monotonic()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            elapsed = time.monotonic() - self._t0
            click.echo(f"[{elapsed:6.1f}s] {message}", err=True)


def log(message: str) -> None:
    click.echo(message, err=True)


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()
