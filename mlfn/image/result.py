"""What a build returns (`BuildResult`) and the image reference a --tag names: shared by
the Docker builder (mlfn.image.build) and the daemonless one (mlfn.image.oci)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class BuildResult:
    """A built function image. `digest` is the registry manifest digest when pushed,
    else the local image id; `content_hash` identifies the function content."""

    image: str  # full reference incl. tag
    image_id: str
    digest: str
    repo_digest: Optional[str]
    size_bytes: int  # uncompressed
    compressed_size_bytes: Optional[int]
    layers: list  # [{name, size_bytes, ...}]
    labels: dict
    model_sha256: str
    quantization: str
    pipeline_hash: str
    content_hash: str
    builder: str = "docker"
    cached: bool = False  # True when an image with identical content already existed
    oci_layout: Optional[str] = None
    context_dir: Optional[str] = None
    function_dir: Optional[str] = None
    models: list = field(default_factory=list)  # [{name, sha256, quantization}]
    notes: list = field(default_factory=list)  # hints for the user (e.g. old images piling up)

    def to_dict(self) -> dict:
        import dataclasses

        return dataclasses.asdict(self)


def image_reference(tag: Optional[str], repository: str, default_tag: str) -> str:
    """--tag T: 'T' alone is a tag of the default repository; 'repo:t' or 'repo' as given."""
    if not tag:
        return f"{repository}:{default_tag}"
    if "/" in tag or ":" in tag:
        last = tag.rsplit("/", 1)[-1]
        return tag if ":" in last else f"{tag}:{default_tag}"
    # a bare word: a tag when it cannot be a repository name of ours
    return f"{repository}:{tag}"
