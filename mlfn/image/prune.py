"""`mlfn images prune`: remove a function's old images from the local Docker engine.

Every `mlfn build` of changed content leaves another `mlfn/NAME:<hash>` image (about
115 MB with its layers). An image is kept when a deployed version uses it (same content
hash or image id) or when it is one of the `keep` newest builds; the rest are removed by
tag, so layers shared with kept images stay. Images a container still uses are kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from mlfn.errors import BuildError, MlfnError

FUNCTION_LABEL = "dev.mlfn.function"
CONTENT_LABEL = "dev.mlfn.content-hash"
HINT_AT = 5  # builds of one function before `mlfn build` mentions `mlfn images prune`


@dataclass
class PruneResult:
    function: str
    removed: list = field(default_factory=list)  # [{"image", "id", "size_bytes"}]
    kept: list = field(default_factory=list)  # [{"image", "id", "size_bytes", "why"}]
    freed_bytes: int = 0
    dry_run: bool = False


def function_images(client, function: str) -> list:
    """The function's images in this engine, newest first."""
    images = client.images.list(filters={"label": f"{FUNCTION_LABEL}={function}"})
    return sorted(images, key=lambda i: i.attrs.get("Created", ""), reverse=True)


def deployed_keys(function: str, list_versions: Callable[[], list]) -> set:
    """Content hashes and image ids/digests the function's deployed versions use."""
    try:
        versions = list_versions()
    except MlfnError as e:
        raise MlfnError(f"Cannot tell which images the deployed versions of {function} use ({str(e).rstrip('.')}); "
                        "nothing was removed.") from None
    keys = set()
    for v in versions:
        keys.update(k for k in (v.content_hash, v.digest) if k)
    return keys


def prune_images(client, function: str, deployed: set, keep: int = 3, dry_run: bool = False,
                 progress: Optional[Callable[[str], None]] = None) -> PruneResult:
    """Remove `function`'s images that no deployed version uses, beyond the `keep` newest."""
    import docker

    if keep < 0:
        raise MlfnError(f"--keep is {keep}; give 0 or more builds to keep.")
    say = progress or (lambda _m: None)
    result = PruneResult(function=function, dry_run=dry_run)
    for rank, image in enumerate(function_images(client, function)):
        tags = image.tags or [image.id]
        row = {"image": tags[0], "id": image.id, "size_bytes": int(image.attrs.get("Size", 0))}
        labels = image.labels or {}
        if labels.get(CONTENT_LABEL) in deployed or image.id in deployed:
            result.kept.append({**row, "why": "a deployed version uses it"})
            continue
        if rank < keep:
            result.kept.append({**row, "why": f"one of the {keep} newest builds"})
            continue
        if not dry_run:
            try:
                for tag in tags:
                    client.images.remove(tag)
            except docker.errors.APIError as e:
                if e.status_code == 409:
                    result.kept.append({**row, "why": "a container uses it"})
                    continue
                raise BuildError(f"Docker could not remove {tags[0]}: {e.explanation or e}.") from None
            say(f"Removed {tags[0]}")
        result.removed.append(row)
        result.freed_bytes += row["size_bytes"]
    return result


def prune_hint(client, function: str) -> Optional[str]:
    """A sentence for `mlfn build` when the function's images pile up; None otherwise."""
    images = function_images(client, function)
    if len(images) < HINT_AT:
        return None
    return (f"{len(images)} images of {function} are in Docker; 'mlfn images prune' removes those "
            "no deployed version or recent build uses.")
