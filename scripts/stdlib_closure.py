"""Print the standard-library modules a function image can reach (mlfn.image.stdlib_keep.REACHABLE).

    python scripts/stdlib_closure.py --stdlib ROOTFS/usr/lib/python3.11 TREE [TREE ...]

TREEs are import roots whose every module counts as reachable: the runtime
(`actions`), Debian's numpy (`ROOTFS/usr/lib/python3/dist-packages`) and dependency
trees of `pip install --target` (LiteRT + Pillow, h2 + protobuf, cryptography + cffi);
sourceless `.pyc` trees are read too. `--stdlib` is the base's own (already pruned)
standard library, so what the base never shipped (unittest, pydoc, tkinter, ...) is
not followed. modulefinder follows every `import` statement, also inside functions and
`try`, so the result over-approximates what can run; the modules Python imports by
computed name (codecs, `_sysconfigdata_*`, `site`) are added in stdlib_keep.py, not
here. Run with Python 3.11 (the image's bytecode version).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlfn.image.stdlib_keep import reachable_stdlib  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stdlib", required=True, help="the base image's standard library folder")
    ap.add_argument("trees", nargs="+", help="import roots whose modules are reachable")
    a = ap.parse_args()
    print("\n".join(reachable_stdlib(a.stdlib, a.trees)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
