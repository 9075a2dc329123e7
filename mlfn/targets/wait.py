"""One polling helper for every platform (kn's pkg/wait style): call `step` until it says
done or the deadline passes; report each new state through `note` once."""
from __future__ import annotations

import time
from typing import Any, Callable, Optional, Tuple

from mlfn.errors import TargetError

Step = Callable[[], Tuple[bool, Any, str]]  # -> (done, value, what the state is now)


def poll(step: Step, *, timeout: float, interval: float, what: str,
         note: Callable[[str], None] = lambda m: None, sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic) -> Any:
    """The value of the first step that is done. A step may raise to fail at once; when time
    runs out: TargetError "<what> timed out after Ns; last state: <state>."."""
    deadline = clock() + timeout
    last: Optional[str] = None
    while True:
        done, value, state = step()
        if done:
            return value
        if state != last:
            note(f"{what}: {state}")
            last = state
        if clock() >= deadline:
            raise TargetError(f"{what} timed out after {timeout:g}s; last state: {state}.")
        sleep(interval)
