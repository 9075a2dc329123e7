"""The standard library a function image keeps (issue 17): what the runtime and its
dependencies can reach, plus what Python imports by computed name and a small safety
set for custom steps; `mlfn base build` removes every other stdlib module (-3.4 MB).

REACHABLE is printed by `scripts/stdlib_closure.py` (`reachable_stdlib`: modulefinder
over every module of the runtime, Debian's numpy, LiteRT, Pillow, h2/hpack/hyperframe,
protobuf, cryptography and cffi, inside the base's standard library as PRUNE and
PRUNE_GLOBS of base_image.py leave it; every `import` statement counts, also inside
functions and `try`). Regenerate it when the runtime or a dependency imports a new
stdlib module: tests/image/test_image_slim.py fails when the image's code reaches a
stdlib module this leaves out, and imports every stdlib module left in the built image.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable

REACHABLE = frozenset("""
__future__ _aix_support _bootsubprocess _bz2 _collections_abc _compat_pickle _compression
_contextvars _ctypes _decimal _json _lzma _multiprocessing _osx_support _posixshmem _py_abc
_queue _strptime _threading_local _typing _uuid _weakrefset abc argparse ast base64 bisect bz2
calendar codecs collections collections.abc colorsys concurrent concurrent.futures
concurrent.futures._base concurrent.futures.process concurrent.futures.thread contextlib
contextvars copy copyreg csv ctypes ctypes._aix ctypes._endian ctypes.util dataclasses datetime
decimal dis email email._encoded_words email._header_value_parser email._parseaddr
email._policybase email.base64mime email.charset email.contentmanager email.encoders
email.errors email.feedparser email.generator email.header email.headerregistry email.iterators
email.message email.parser email.policy email.quoprimime email.utils encodings enum fnmatch
fractions ftplib functools genericpath getopt getpass gettext glob gzip hashlib heapq hmac html
html.entities http http.client http.cookiejar http.server imp importlib importlib._abc
importlib._bootstrap importlib._bootstrap_external importlib.abc importlib.machinery
importlib.metadata importlib.metadata._adapters importlib.metadata._collections
importlib.metadata._functools importlib.metadata._itertools importlib.metadata._meta
importlib.metadata._text importlib.readers importlib.resources importlib.resources._adapters
importlib.resources._common importlib.resources._itertools importlib.resources._legacy
importlib.resources.abc importlib.resources.readers importlib.util inspect io ipaddress json
json.decoder json.encoder json.scanner keyword linecache locale logging lzma mimetypes mmap
multiprocessing multiprocessing.connection multiprocessing.context multiprocessing.dummy
multiprocessing.dummy.connection multiprocessing.forkserver multiprocessing.heap
multiprocessing.managers multiprocessing.pool multiprocessing.popen_fork
multiprocessing.popen_forkserver multiprocessing.popen_spawn_posix multiprocessing.process
multiprocessing.queues multiprocessing.reduction multiprocessing.resource_sharer
multiprocessing.resource_tracker multiprocessing.shared_memory multiprocessing.sharedctypes
multiprocessing.spawn multiprocessing.synchronize multiprocessing.util netrc ntpath nturl2path
numbers opcode operator os pathlib pickle pkgutil platform plistlib posixpath pprint py_compile
queue quopri random re re._casefix re._compiler re._constants re._parser reprlib runpy secrets
selectors shlex shutil signal socket socketserver stat statistics string struct subprocess
sysconfig tarfile tempfile termios textwrap threading timeit token tokenize traceback
tracemalloc types typing urllib urllib.error urllib.parse urllib.request urllib.response uuid
warnings weakref xml xml.etree xml.etree.ElementPath xml.etree.ElementTree xml.parsers
xml.parsers.expat zipfile zipimport
""".split())

# Imported by computed name or from C, which modulefinder cannot follow: Python's start-up
# (site, sitecustomize), sysconfig's `_sysconfigdata_*`, the `re` internals' deprecated
# aliases, stringprep (the idna codec: socket encodes every host name with it), resource
# (os.wait3/os.wait4 build their rusage with it), and the codecs (encodings.*).
BY_NAME = frozenset("site _sitebuiltins sitecustomize sre_compile sre_constants sre_parse stringprep resource".split())
BY_NAME_PREFIXES = ("_sysconfigdata_", "encodings.")
# Small pure modules a custom step may well import although nothing else does.
CUSTOM_STEP_SAFETY = frozenset(
    "configparser difflib graphlib tomllib tomllib._parser tomllib._re tomllib._types "
    "zoneinfo zoneinfo._common zoneinfo._tzpath zoneinfo._zoneinfo _zoneinfo".split())
# The CJK codecs (0.9 MB of C tables): functions decode UTF-8 JSON and binary images; a
# function that decodes Shift-JIS, GB18030, Big5, ... text needs a full base image.
CJK_CODECS = frozenset("_codecs_cn _codecs_hk _codecs_iso2022 _codecs_jp _codecs_kr _codecs_tw _multibytecodec".split())
CJK_ENCODINGS = frozenset(
    "big5 big5hkscs cp932 cp949 cp950 euc_jis_2004 euc_jisx0213 euc_jp euc_kr gb18030 gb2312 gbk hz "
    "iso2022_jp iso2022_jp_1 iso2022_jp_2 iso2022_jp_2004 iso2022_jp_3 iso2022_jp_ext iso2022_kr johab "
    "shift_jis shift_jis_2004 shift_jisx0213".split())
# Reached, but left out on purpose: modules only imported on Windows or macOS, and ssl
# (the base leaves out OpenSSL and _ssl; http.client and urllib import ssl inside `try`)
LEFT_OUT = frozenset({"encodings.mbcs", "encodings.oem", "multiprocessing.popen_spawn_win32",
                      "ctypes.macholib", "ctypes.macholib.dyld", "ctypes.macholib.dylib", "ctypes.macholib.framework", "ssl"})


def keeps(module: str) -> bool:
    """True when the base keeps the stdlib module `module` (dotted name; a C extension
    of lib-dynload by its module name)."""
    if module in LEFT_OUT or module in CJK_CODECS or module.rpartition(".")[2] in CJK_ENCODINGS:
        return False
    return (module in REACHABLE or module in BY_NAME or module in CUSTOM_STEP_SAFETY
            or module == "encodings" or module.startswith(BY_NAME_PREFIXES))


def module_name(rel: str) -> str:
    """The module a file of the standard library folder holds ("" when it holds none):
    `email/parser.pyc` -> email.parser, `lib-dynload/_json.cpython-311-....so` -> _json."""
    if rel.startswith("lib-dynload/"):
        return rel.split("/", 1)[1].split(".", 1)[0]
    if not rel.endswith((".pyc", ".py")):
        return ""
    name = rel.rsplit(".", 1)[0].replace("/", ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def prune_stdlib(stdlib: Path) -> int:
    """Remove every module of `stdlib` (the base's python3.11 folder) that `keeps` does
    not keep, and the files that hold no module (licence, docs); bytes removed."""
    removed = 0
    for p in sorted(stdlib.rglob("*"), reverse=True):  # files before their folders
        rel = p.relative_to(stdlib).as_posix()
        if p.is_dir() and not p.is_symlink():
            if not any(p.iterdir()):
                p.rmdir()
            continue
        if not keeps(module_name(rel)):
            removed += p.lstat().st_size
            p.unlink()
    return removed


def stdlib_modules(stdlib: Path) -> list:
    """Dotted names of the modules a standard library folder holds, sorted."""
    names = {module_name(p.relative_to(stdlib).as_posix()) for p in stdlib.rglob("*") if p.is_file()}
    return sorted(n for n in names if n)




def pruned_imports(folder: Path) -> list:
    """(file relative to `folder`, module) for each stdlib module a `.py` file under
    `folder` (custom steps, build.custom_files) imports and mlfn's base leaves out.
    Imports inside functions and `try` count too: what is listed may be optional."""
    import ast

    found = []
    for path in sorted(Path(folder).rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(errors="replace"))
        except SyntaxError:
            continue  # the runtime reports it when it loads the step
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
        for name in sorted(names):
            if name.split(".")[0] in sys.stdlib_module_names and name != "os.path" and not keeps(name):
                found.append((path.relative_to(folder).as_posix(), name))
    return found


def stdlib_finder(stdlib: str, trees: Iterable[str]):
    """A modulefinder.ModuleFinder that has followed every import of every module under
    `trees` (import roots; sourceless .pyc trees too) inside the standard library folder
    `stdlib`. Python 3.11 (the image's bytecode) only."""
    import modulefinder
    import os

    trees = [str(t) for t in trees]
    finder = modulefinder.ModuleFinder(path=[stdlib, os.path.join(stdlib, "lib-dynload"), *trees])
    for root in trees:  # namespace packages (google, google._upb) are given, as modulefinder
        for folder in sorted(Path(root).rglob("*")):  # fails on a package without __init__
            rel = folder.relative_to(root).parts
            if folder.is_dir() and all(p.isidentifier() for p in rel) and not any(folder.glob("__init__.py*")):
                module = finder.modules.get(".".join(rel)) or finder.add_module(".".join(rel))
                module.__path__ = sorted({*(module.__path__ or []), str(folder)})
    names = [name for tree in trees for name in tree_modules(Path(tree))]
    for name in names:
        try:
            finder.import_hook(name)
        except Exception as e:  # a module that cannot be read is reported, not fatal
            print(f"skipped {name}: {e}", file=sys.stderr)
    return finder


def reachable_stdlib(stdlib: str, trees: Iterable[str]) -> list:
    """Dotted names of the stdlib modules (files of `stdlib`) `stdlib_finder` reaches."""
    prefix = stdlib.rstrip("/") + "/"
    finder = stdlib_finder(stdlib, trees)
    return sorted(name for name, module in finder.modules.items() if (module.__file__ or "").startswith(prefix))


def tree_modules(tree: Path) -> list:
    """Dotted names of the modules under an import root, read from the files alone (no import)."""
    names = []
    for p in sorted(tree.rglob("*")):
        rel = p.relative_to(tree)
        if "__pycache__" in rel.parts or p.suffix not in (".py", ".pyc", ".so") or not p.is_file():
            continue
        if not all(part.isidentifier() for part in rel.parts[:-1]):
            continue  # *.dist-info, *.libs, data folders: no modules
        parts = [*rel.parts[:-1], p.name.split(".", 1)[0]]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            names.append(".".join(parts))
    return sorted(set(names))
