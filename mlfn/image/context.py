"""The build context: everything an image is made of, laid out as its layers.

    <context>/Dockerfile          templates/Dockerfile.j2, rendered
    <context>/deps/               layer 2: /opt/mlfn/deps (hard links into the deps cache)
    <context>/runtime/            layer 3: /opt/mlfn/runtime/mlfn_runtime
    <context>/models/             layer 4: /opt/mlfn/function/models/<model>/model.tflite
    <context>/config/             layer 5: /opt/mlfn/function/function.json, labels, custom files

The staged function folder (stage_function) is kept beside it (`.mlfn/function`), usable
by `mlfn run --no-docker`.

Both builders (docker, oci) consume this same folder, so they produce the same layers.
The content hash identifies the function: base + dependency set + runtime code + models
+ function.json and its files. Equal inputs give an equal hash, and the default tag is
derived from it, so rebuilding identical content is a no-op.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from mlfn import __version__
from mlfn.image.base_image import NONROOT_UID, compile_tree
from mlfn.image.deps import deps_key, ensure_deps, requirements_for
from mlfn.image.stage import FUNCTION_JSON, pipeline_hash, stage_function
from mlfn.image.stdlib_keep import pruned_imports
from mlfn.image.tarball import created_timestamp, source_date_epoch, tree_hash

# (layer name, folder in the context, destination in the image)
LAYERS = [
    ("deps", "deps", "/opt/mlfn/deps/"),
    ("runtime", "runtime", "/opt/mlfn/runtime/"),
    ("models", "models", "/opt/mlfn/function/"),
    ("config", "config", "/opt/mlfn/function/"),
]
IMAGE_ENV = {
    "PYTHONPATH": "/opt/mlfn/runtime:/opt/mlfn/deps",
    "MLFN_FUNCTION_DIR": "/opt/mlfn/function",
    "PYTHONDONTWRITEBYTECODE": "1",
}
IMAGE_CMD = ["python3", "-m", "mlfn_runtime"]
PORT = 8080


@dataclass
class BuildContext:
    """A prepared context, ready for either builder."""

    path: Path
    function_dir: Path
    base_image: str
    repository: str
    requirements: list
    content_hash: str  # "sha256:<hex>"
    model_sha256: str
    quantization: str
    pipeline_hash: str
    labels: dict = field(default_factory=dict)
    function: dict = field(default_factory=dict)  # function.json

    @property
    def default_tag(self) -> str:
        return self.content_hash.split(":", 1)[1][:12]

    def layer_dirs(self) -> list:
        return [(name, self.path / folder, dest) for name, folder, dest in LAYERS]


def _dockerquote(value) -> str:
    """A Dockerfile double-quoted string (LABEL values); `$` is escaped, since LABEL
    substitutes environment variables (a value holding "$PATH" would change)."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("\n", " ")
    return f'"{text}"'


def render_dockerfile(base_image: str, labels: Optional[dict] = None) -> str:
    """templates/Dockerfile.j2 rendered for `base_image` (labels: the final LABEL step)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mlfn.templates", "."),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["dockerquote"] = _dockerquote
    return env.get_template("Dockerfile.j2").render(
        base_image=base_image, mlfn_version=__version__, user=NONROOT_UID, port=PORT, labels=labels or {},
    )


def runtime_source() -> Path:
    """The installed mlfn_runtime package (copied into every image)."""
    import mlfn_runtime

    return Path(mlfn_runtime.__file__).resolve().parent


def _copy_tree(src: Path, dest: Path, link: bool) -> None:
    def copy(s, d):
        if link:
            try:
                os.link(s, d)
                return d
            except OSError:
                pass
        return shutil.copy2(s, d)

    shutil.copytree(src, dest, symlinks=True, copy_function=copy,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc") if not link else None)


def _readable_modes(root: Path) -> None:
    """Folders 0755, files 0644 (0755 when executable), like the oci builder's layers.

    COPY keeps the host's modes and makes root the owner: files written under a umask
    of 077 (0600) could not be read by the image's non-root user, and the function
    would not start."""
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if not os.path.islink(p):
                want = 0o755 if st.st_mode & 0o111 else 0o644
                if st.st_mode & 0o7777 != want:
                    os.chmod(p, want)


def _git(project: Path, *args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", str(project), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def repository_url(remote: str) -> Optional[str]:
    """A git remote as a public https URL without credentials (`git@host:a/b.git` ->
    `https://host/a/b.git`); None for a local path or file:// remote (no label then)."""
    scp = re.fullmatch(r"[\w.-]+@([\w.-]+):(?!/)(.+)", remote)
    if scp:
        return f"https://{scp.group(1)}/{scp.group(2)}"
    m = re.fullmatch(r"(?:https?|ssh|git)://(?:[^/@]*@)?([\w.-]+)(?::\d+)?(/.+)", remote, flags=re.I)
    return f"https://{m.group(1)}{m.group(2)}" if m else None


def oci_labels(cfg, ctx_tag: str, reproducible: bool = False) -> dict:
    """OCI annotations. `created` is SOURCE_DATE_EPOCH, else now (reproducible: else 0);
    `source` is the git remote as an https URL without credentials, left out for a local
    path (it would name the builder's folders and make builds in two folders differ)."""
    project = cfg.project_dir
    created = created_timestamp() if not reproducible else time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(source_date_epoch()))
    labels = {
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.title": cfg.name,
        "org.opencontainers.image.version": ctx_tag,
        "org.opencontainers.image.base.name": cfg.build.base_image,
    }
    revision = _git(project, "rev-parse", "HEAD")
    if revision:
        labels["org.opencontainers.image.revision"] = revision
    source = repository_url(_git(project, "config", "--get", "remote.origin.url") or "")
    if source:
        labels["org.opencontainers.image.source"] = source
    return labels


def prepare_context(cfg, *, base_id: str = "", progress: Optional[Callable[[str], None]] = None,
                    quantize: Optional[Callable] = None, reproducible: bool = False,
                    base_packages: Optional[dict] = None) -> BuildContext:
    """Stage the function, the deps and the runtime into the build context folder.
    base_packages: {distribution: version} the base provides (left out of the deps layer)."""
    say = progress or (lambda m: None)
    project = cfg.project_dir
    path = Path(cfg.resolve(cfg.build.context_dir)) if cfg.build.context_dir else project / ".mlfn" / "build"
    # the staged function folder sits beside the context (never inside: the context is replaced)
    function_dir = path.parent / "function" if path.name == "build" else path.with_name(path.name + "-function")

    function_dir = stage_function(cfg, function_dir, progress=progress, quantize=quantize)
    if "numpy" in (base_packages or {}):  # mlfn's base: its standard library is pruned
        for file, module in pruned_imports(function_dir):
            say(f"Warning: {file} imports {module}, which the standard library of {cfg.build.base_image} leaves out "
                "(mlfn/image/stdlib_keep.py); unless that import is optional, set build.base_image to a full "
                "Python 3.11 image such as python:3.11-slim.")
    doc = json.loads((function_dir / FUNCTION_JSON).read_text())
    reqs = requirements_for(cfg, base_packages or {})
    site = ensure_deps(reqs, progress=progress)

    say(f"Assembling the build context in {path}")
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    _copy_tree(site, path / "deps", link=True)
    runtime_dir = path / "runtime" / "mlfn_runtime"
    _copy_tree(runtime_source(), runtime_dir, link=False)
    compile_tree(runtime_dir, ddir="/opt/mlfn/runtime/mlfn_runtime")
    (path / "models").mkdir()
    shutil.copytree(function_dir / "models", path / "models" / "models")
    shutil.copytree(function_dir, path / "config", ignore=lambda d, names: ["models"] if Path(d) == function_dir else [])
    for _, folder, _ in LAYERS:
        _readable_modes(path / folder)
    dockerfile = render_dockerfile(cfg.build.base_image)  # without labels: they hold the build time
    (path / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")

    phash = pipeline_hash({**doc, "_files": tree_hash(path / "config", skip=lambda rel: rel == FUNCTION_JSON)})
    first = doc["models"][0]
    ctx = BuildContext(
        path=path, function_dir=function_dir, base_image=cfg.build.base_image,
        repository=cfg.image_repository, requirements=reqs,
        content_hash=content_hash(cfg, path, doc, reqs, base_id, dockerfile),
        model_sha256=first["sha256"], quantization=first["quantization"], pipeline_hash=phash,
        function=doc,
    )
    ctx.labels = image_labels(cfg, ctx, reproducible)
    (path / "Dockerfile").write_text(render_dockerfile(cfg.build.base_image, ctx.labels))
    return ctx


def content_hash(cfg, path: Path, doc: dict, reqs: list, base_id: str, dockerfile: str) -> str:
    """The identity of a function's content: equal hashes, same image behaviour (a version)."""
    parts = {
        "mlfn": __version__,
        "base": cfg.build.base_image,
        "base_id": base_id,
        "deps": deps_key(reqs),
        "runtime": tree_hash(path / "runtime", skip=lambda rel: rel.endswith(".pyc")),
        "models": [m["sha256"] for m in doc["models"]],
        "function": tree_hash(path / "config"),
        "dockerfile": hashlib.sha256(dockerfile.encode()).hexdigest(),
    }
    return "sha256:" + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def image_labels(cfg, ctx: "BuildContext", reproducible: bool) -> dict:
    """The OCI labels and mlfn's own (function, model, pipeline, content hash)."""
    labels = {
        **oci_labels(cfg, ctx.default_tag, reproducible),
        "dev.mlfn.function": cfg.name,
        "dev.mlfn.model.sha256": ctx.model_sha256,
        "dev.mlfn.quantization": ctx.quantization,
        "dev.mlfn.pipeline.hash": ctx.pipeline_hash,
        "dev.mlfn.content-hash": ctx.content_hash,
        "dev.mlfn.runtime": cfg.build.runtime,
        "dev.mlfn.version": __version__,
    }
    models = ctx.function["models"]
    if len(models) > 1:
        labels["dev.mlfn.models"] = json.dumps({m["name"]: m["sha256"] for m in models}, sort_keys=True)
    return labels
