"""Where a model comes from: a local file or folder, or an S3(-compatible) object.

`resolve_source(path)` returns a `ModelSource`: the local path, its format (`saved_model`,
`keras`, `h5`, `tflite`), its size and a content hash (used as part of the conversion cache
key). `s3://bucket/key` is downloaded first (boto3, imported lazily; endpoint and
credentials come from the standard AWS environment/config, e.g. AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_PROFILE); a key that is a "folder" (a SavedModel) is downloaded
with every object under it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from mlfn.errors import ModelError

FORMATS = ("saved_model", "keras", "h5", "tflite")


@dataclass
class ModelSource:
    path: Path  # local file or SavedModel folder
    format: str  # one of FORMATS
    origin: str  # what the user wrote (a path or s3:// URL)
    size_bytes: int
    sha256: str  # content hash of the file, or of every file in the folder


def detect_format(path: Path, origin: Optional[str] = None) -> str:
    where = origin or str(path)
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return "saved_model"
        raise ModelError(
            f"{where} is a folder without saved_model.pb; point model.path at a SavedModel "
            "folder, a .keras, .h5 or .tflite file."
        )
    suffix = path.suffix.lower()
    if suffix == ".keras":
        return "keras"
    if suffix in (".h5", ".hdf5"):
        return "h5"
    if suffix == ".tflite":
        return "tflite"
    raise ModelError(
        f"{where} has an unknown model format ({suffix or 'no extension'}); use a SavedModel "
        "folder, a .keras, .h5 or .tflite file."
    )


_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def check_signature(path: Path, fmt: str, origin: str) -> None:
    """A file whose content does not match its extension is refused here, before TensorFlow
    is imported (a text file named model.keras would otherwise fail seconds later)."""
    if fmt == "saved_model":
        return
    with open(path, "rb") as f:
        head = f.read(2056)
    if fmt == "keras" and not head.startswith(b"PK"):
        what = "a Keras archive (a zip written by model.save('model.keras'))"
    elif fmt == "h5" and not any(head[o:o + 8] == _HDF5_MAGIC for o in (0, 512, 1024, 2048)):
        what = "an HDF5 file (written by model.save('model.h5'))"
    elif fmt == "tflite" and head[4:8] != b"TFL3":
        what = "a TFLite flatbuffer"
    else:
        return
    raise ModelError(f"Model {origin} is not {what}; its content does not match its extension, "
                     "so point model.path at the real model file.")


def hash_path(path: Path) -> tuple[str, int]:
    """sha256 and total size of a file, or of a folder's files (names included, sorted)."""
    h = hashlib.sha256()
    total = 0
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
                total += len(chunk)
    return h.hexdigest(), total


def resolve_source(path: str, cache_dir: Optional[Path] = None,
                   progress: Optional[Callable[[str], None]] = None) -> ModelSource:
    """A ModelSource for a local path or an s3:// URL (downloaded under cache_dir/s3)."""
    origin = str(path)
    if origin.startswith("s3://"):
        local = download_s3(origin, Path(cache_dir or tempfile.gettempdir()) / "s3", progress)
    elif "://" in origin:
        raise ModelError(f"model.path {origin} uses an unsupported scheme; use a local path or s3://bucket/key.")
    else:
        local = Path(origin)
        if not local.exists():
            raise ModelError(f"Model {origin} does not exist; train or copy it there, or fix model.path in mlfn.yaml.")
    fmt = detect_format(local, origin)
    check_signature(local, fmt, origin)
    sha, size = hash_path(local)
    if size == 0:
        raise ModelError(f"Model {origin} is empty (0 bytes).")
    return ModelSource(path=local, format=fmt, origin=origin, size_bytes=size, sha256=sha)


def _escapes(rel: str) -> bool:
    """True when a key (relative to the download folder) would land outside it."""
    parts = rel.split("/")
    return rel.startswith("/") or any(p in ("..", ".") for p in parts) or "\0" in rel


def _split_s3(url: str) -> tuple[str, str]:
    rest = url[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise ModelError(f"{url} is not a valid S3 URL; expected s3://bucket/key.")
    key = key.rstrip("/")
    if _escapes(key) or bucket in (".", ".."):
        raise ModelError(f"{url} has '.' or '..' in its key; give the object's plain key.")
    return bucket, key


def _s3_client():
    try:
        import boto3
        from botocore.config import Config as BotoConfig
    except ImportError:  # pragma: no cover - depends on the install
        raise ModelError("Reading models from s3:// needs boto3; install it with: pip install 'mlfn[s3]'.") from None
    return boto3.client(
        "s3",
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None,
        config=BotoConfig(retries={"max_attempts": 3, "mode": "standard"}),
    )


def _s3_error(url: str, exc: Exception) -> ModelError:
    from botocore.exceptions import ClientError, NoCredentialsError, EndpointConnectionError

    if isinstance(exc, NoCredentialsError):
        return ModelError(f"No AWS credentials found to read {url}; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE.")
    if isinstance(exc, EndpointConnectionError):
        return ModelError(f"Cannot reach the S3 endpoint for {url}: {exc}.")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchKey", "404", "NotFound"):
            return ModelError(f"S3 object {url} does not exist; check model.path and the bucket.")
        if code == "NoSuchBucket":
            return ModelError(f"S3 bucket of {url} does not exist; check model.path.")
        if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
            return ModelError(
                f"Access denied reading {url} ({code}); check the AWS credentials and the bucket policy."
            )
        return ModelError(f"S3 refused to read {url}: {code or status} {exc.response.get('Error', {}).get('Message', '')}".rstrip() + ".")
    return ModelError(f"Cannot read {url}: {exc}.")


def download_s3(url: str, dest_root: Path, progress: Optional[Callable[[str], None]] = None) -> Path:
    """Download an object (or every object under a prefix) to dest_root/bucket/key.

    The download goes to a temporary sibling first and is renamed into place, so an
    interrupted download never looks complete."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _split_s3(url)
    client = _s3_client()
    dest = Path(dest_root) / bucket / key
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".dl-", dir=dest.parent))
    try:
        try:
            objects = _list_s3(client, bucket, key)
        except ClientError:
            objects = []  # listing may be denied while reading is allowed: head_object decides
        except BotoCoreError as e:
            raise _s3_error(url, e) from None
        if progress:
            progress(f"Downloading {url} ({len(objects) or 1} object(s))")
        try:
            if not objects:  # a single object (or nothing: head_object says which)
                client.head_object(Bucket=bucket, Key=key)
                target = tmp / Path(key).name
                client.download_file(bucket, key, str(target))
            else:
                target = tmp / Path(key).name
                for obj_key in objects:
                    rel = obj_key[len(key) + 1:]
                    if _escapes(rel):
                        raise ModelError(f"S3 object s3://{bucket}/{obj_key} under {url} has a key that points "
                                         "outside the model folder ('..' or '/'); refusing to download it.")
                    out = target / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    client.download_file(bucket, obj_key, str(out))
        except (ClientError, BotoCoreError) as e:
            raise _s3_error(url, e) from None
        if dest.is_dir():
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        os.replace(target, dest)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _list_s3(client, bucket: str, key: str) -> list:
    """Keys under `key/` (a SavedModel folder), or [] when `key` names a single object."""
    keys = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=key + "/"):
        keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/")]
    return keys
