"""The repository stands alone: nothing in it may read a path outside the checkout.

Two checks, both wired into every test run by tests/conftest.py:

- `scan_tree(root)`: a static scan of every git-tracked text file for paths that leave the
  checkout: the "shared" folder beside it (named relatively, or as a parent's child),
  `Path(__file__)` climbs (`parents[N]`, chained `parent`, nested `os.path.dirname`) that go
  above the checkout, climbs from a `*ROOT*` variable that names the checkout, and absolute
  paths of this machine. tests/test_standalone.py runs it on the project. The patterns are
  written so that this file does not match them.
- A pytest plugin (this module) that installs an audit hook (`sys.addaudithook`) for the
  "open", "os.listdir" and "os.scandir" events. It records every file or folder the test
  process touches under the checkout's PARENT folder but outside the checkout itself (a
  sibling folder), with the test and the line that did it, and fails the session
  at its end, naming each. Only entries that were beside the checkout before the run count
  (what the tests create there, e.g. temp folders when the checkout sits in /tmp, does not),
  and never the temp folder, the Python installation and virtualenv, or hidden entries (when
  the checkout sits in a home folder: ~/.cache, ~/.docker, ~/.mlfn, ...). Subprocesses are not
  watched; the static scan covers their code.
"""
from __future__ import annotations

import os
import re
import site
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# --- static scan -------------------------------------------------------------------------

# Written so that this file does not match itself.
_SIBLING = re.compile(r"\.\.[/\\]+shared\b")
_PARENT_SHARED = re.compile(r"\.parent\s*/\s*['\"]shared['\"]")
_ROOT_ESCAPE = re.compile(r"\b\w*ROOT\w*\s*(?:\.parent\b|\.parents\s*\[|/\s*['\"]\.\.['\"])")
_MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:wor[k]|roo[t])/")
_FILE_PARENTS = re.compile(r"__file__\s*\)\s*(?:\.resolve\(\s*\)\s*|\.absolute\(\s*\)\s*)?"
                           r"(?:\.parents\s*\[\s*(\d+)\s*\]|((?:\.parent\b\s*)+))")
_DIRNAME = re.compile(r"dirname\s*\(")


@dataclass(frozen=True)
class Hit:
    """One line of one file that names a path outside the checkout."""

    path: str  # relative to the scanned root, with /
    line: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}: {self.text.strip()[:160]}"


def tracked_files(root: Path) -> list[str]:
    """The files git tracks under `root` (every file but hidden folders when it is no git checkout)."""
    r = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True)
    if r.returncode == 0 and r.stdout:
        return [p for p in r.stdout.decode().split("\0") if p]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"]
        found += [os.path.relpath(os.path.join(dirpath, f), root) for f in filenames]
    return sorted(p.replace(os.sep, "/") for p in found)


def _climb_escapes(rel_path: str, line: str) -> str | None:
    """A `Path(__file__)` or `os.path.dirname(__file__)` climb that ends above the checkout."""
    depth = rel_path.count("/")  # folders between the root and the file
    for m in _FILE_PARENTS.finditer(line):
        up = int(m.group(1)) if m.group(1) is not None else m.group(2).count(".parent") - 1
        if up >= depth + 1:
            return f"Path(__file__) climbs {up + 1} folders from a file {depth} below the checkout"
    if "__file__" in line:
        dirnames = len(_DIRNAME.findall(line))
        if dirnames > depth + 1:
            return f"os.path.dirname(__file__) climbs {dirnames} folders from a file {depth} below the checkout"
    return None


def scan_text(rel_path: str, text: str) -> list[Hit]:
    hits = []
    for number, line in enumerate(text.splitlines(), 1):
        reason = None
        if _SIBLING.search(line) or _PARENT_SHARED.search(line):
            reason = "names the shared folder beside the checkout"
        elif _ROOT_ESCAPE.search(line):
            reason = "goes above the checkout's root"
        elif _MACHINE_PATH.search(line):
            reason = "names an absolute path of this machine"
        else:
            reason = _climb_escapes(rel_path, line)
        if reason:
            hits.append(Hit(rel_path, number, line, reason))
    return hits


def scan_tree(root: Path) -> list[Hit]:
    """Every line of every tracked text file under `root` that names a path outside it."""
    hits = []
    for rel in tracked_files(root):
        try:
            data = (root / rel).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            continue  # deleted in the work tree, or a submodule
        if b"\0" in data:
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        hits += scan_text(rel, text)
    return hits


# --- runtime guard -----------------------------------------------------------------------

_EVENTS = frozenset({"open", "os.listdir", "os.scandir"})


class OutsideReads:
    """Records what this process opens beside the checkout (see the module docstring)."""

    def __init__(self, root: Path):
        self.root = os.path.realpath(root)
        self.parent = os.path.dirname(self.root)
        self.allowed = self._allowed_roots(self.parent)
        self.siblings = self._entries(self.parent)  # what was beside the checkout before the tests ran
        self.records: dict[tuple[str, str], str] = {}  # (path, test) -> where in the code
        self.current_test = "collection"
        self._busy = threading.local()

    @staticmethod
    def _allowed_roots(parent: str) -> list[str]:
        """The Python installation and the temp folder: not the project's business. A root that
        holds the checkout's parent (a checkout cloned into /tmp) would allow everything, so it
        is left out; what the tests create there is not a sibling (see `siblings`)."""
        roots = {tempfile.gettempdir(), sys.prefix, sys.base_prefix, sys.exec_prefix}
        roots.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
        roots.add(site.getusersitepackages())
        real = {os.path.realpath(r) for r in roots if r}
        return sorted(r for r in real if not _within(parent, r))

    @staticmethod
    def _entries(folder: str) -> frozenset:
        try:
            return frozenset(os.listdir(folder))
        except OSError:
            return frozenset()

    def allow(self, path: str | os.PathLike) -> None:
        self.allowed.append(os.path.realpath(path))

    def outside(self, path: str) -> bool:
        """Is `path` beside the checkout: under its parent, in an entry that was there before the
        tests ran, not hidden, not in the checkout and not under an allowed root?"""
        if not _within(path, self.parent):
            return False
        real = os.path.realpath(path)
        if _within(real, self.root) or any(_within(real, a) for a in self.allowed):
            return False
        if not _within(real, self.parent) or real == self.parent:
            return False
        first = os.path.relpath(real, self.parent).split(os.sep)[0]
        return first in self.siblings and not first.startswith(".")

    def audit(self, event: str, args: tuple) -> None:
        if event not in _EVENTS or not args or getattr(self._busy, "on", False):
            return
        self._busy.on = True
        try:
            path = args[0]
            if path is None or isinstance(path, int):
                return
            try:
                path = os.path.abspath(os.fsdecode(path))
            except (TypeError, ValueError):
                return
            if self.outside(path):
                self.records.setdefault((os.path.realpath(path), self.current_test), _caller(self.root))
        finally:
            self._busy.on = False

    def report(self) -> list[str]:
        return [f"{path} (opened during {test}, at {where})" for (path, test), where in sorted(self.records.items())]


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _caller(root: str) -> str:
    """The innermost frame in the project's own code (else the innermost one), as file:line."""
    frame = sys._getframe(2)
    first = None
    while frame is not None:
        name = frame.f_code.co_filename
        if name != __file__:
            first = first or frame
            if _within(os.path.abspath(name), root):
                return f"{os.path.relpath(name, root)}:{frame.f_lineno}"
        frame = frame.f_back
    return f"{first.f_code.co_filename}:{first.f_lineno}" if first else "?"


GUARD = OutsideReads(ROOT)


def pytest_configure(config):
    if not getattr(sys, "_mlfn_checkout_guard", False):  # one hook per process: hooks cannot be removed
        sys.addaudithook(GUARD.audit)
        sys._mlfn_checkout_guard = True
    GUARD.allow(config.option.basetemp or _default_basetemp_root())


def _default_basetemp_root() -> str:
    """Where pytest puts tmp_path folders unless --basetemp says otherwise."""
    import getpass

    try:
        user = getpass.getuser()
    except (ImportError, KeyError, OSError):
        user = "unknown"
    return os.path.join(os.environ.get("PYTEST_DEBUG_TEMPROOT") or tempfile.gettempdir(), f"pytest-of-{user}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    GUARD.current_test = item.nodeid
    yield
    GUARD.current_test = "session teardown"


def pytest_sessionfinish(session, exitstatus):
    if GUARD.records and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    lines = GUARD.report()
    if lines:
        terminalreporter.section("reads outside the checkout", sep="=", red=True, bold=True)
        terminalreporter.line(f"The repository must stand alone, but these paths beside {GUARD.root} were read:")
        for line in lines:
            terminalreporter.line("  " + line, red=True)
