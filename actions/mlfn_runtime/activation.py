"""What code running in an OpenWhisk activation reads: its `__OW_*` variables and the
bundled function.

    from mlfn_runtime import activation

    def main(args):
        aid = activation.get("ACTIVATION_ID")          # or activation.env()["__OW_ACTIVATION_ID"]
        fn = activation.current_function()             # the bundled model(s), or None
        return fn.predict(args) if fn else {"id": aid}

Each activation has its own view (a context variable of the thread serving it), so
activations running at once (an action with concurrency > 1) each see their own
`__OW_ACTIVATION_ID`, `__OW_DEADLINE`, ... The view holds the `__OW_*` variables of the
container and of /init's `env`, overlaid with the fields of this /run.

`os.environ` carries an activation's `__OW_*` variables too, as OpenWhisk runtimes do,
but only while that activation is the only one running: the process environment is one
for all threads, so an activation that starts while another runs leaves it alone (and
reading `os.environ["__OW_ACTIVATION_ID"]` there gives another activation's id). Code
that may run concurrently reads `activation.get`/`activation.env()`. Threads the user's
code starts see the view when started with `contextvars.copy_context().run`.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from types import MappingProxyType
from typing import Iterator, Mapping, Optional

PREFIX = "__OW_"
_EMPTY: Mapping[str, str] = MappingProxyType({})
_view: contextvars.ContextVar = contextvars.ContextVar("mlfn_activation", default=_EMPTY)
_function = None


def env() -> Mapping[str, str]:
    """The `__OW_*` variables of the activation this code runs in (empty outside one)."""
    return _view.get()


def get(name: str, default: Optional[str] = None) -> Optional[str]:
    """One activation variable: `get("ACTIVATION_ID")` or `get("__OW_ACTIVATION_ID")`."""
    key = name if name.startswith(PREFIX) else PREFIX + name.upper()
    return _view.get().get(key, default)


def current_function():
    """The bundled Function (None when the image has none): code actions may call
    `current_function().predict({...})` to use the model in-process."""
    return _function


def bind_function(function) -> None:
    """Called by the server once the function is loaded."""
    global _function
    _function = function


def variables(fields: dict) -> dict:
    """A /run body's fields but `value` -> `{"__OW_<FIELD>": text}`."""
    return {PREFIX + str(k).upper(): v if isinstance(v, str) else _json(v) for k, v in fields.items() if k != "value"}


def _json(v) -> str:
    import json

    return json.dumps(v)


class Activations:
    """Enters activations: sets each one's view, and exports it to os.environ only while
    it is the only activation running."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running = 0
        self.base = {k: v for k, v in os.environ.items() if k.startswith(PREFIX)}

    def add_base(self, env: dict) -> None:
        """/init's `env`: its `__OW_*` variables are part of every activation's view."""
        self.base.update({k: v for k, v in env.items() if k.startswith(PREFIX)})

    @contextlib.contextmanager
    def enter(self, own: dict) -> Iterator[Mapping[str, str]]:
        view = MappingProxyType({**self.base, **own})
        token = _view.set(view)
        with self._lock:
            self._running += 1
            exported = self._export(own) if self._running == 1 else None
        try:
            yield view
        finally:
            with self._lock:
                self._running -= 1
                if exported is not None:
                    _restore(exported)
            _view.reset(token)

    @staticmethod
    def _export(own: dict) -> dict:
        saved = {k: os.environ.get(k) for k in own}
        os.environ.update(own)
        return saved


def _restore(saved: dict) -> None:
    for key, old in saved.items():
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old
