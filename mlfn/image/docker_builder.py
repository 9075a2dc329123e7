"""Build (and push) a prepared context with the local Docker engine (docker SDK, low-level API)."""
from __future__ import annotations

import json
import re
from typing import Callable, Optional

from mlfn.image.base_image import DEFAULT_BASE_TAG, _short, image_exists
from mlfn.errors import BuildError


def ensure_base(client, base_image: str, progress: Optional[Callable[[str], None]] = None):
    """The base image object, pulling a user-chosen base if needed; clear errors otherwise."""
    img = image_exists(client, base_image)
    if img is not None:
        return img
    if base_image.split("/")[-1].split(":")[0] == DEFAULT_BASE_TAG.split(":")[0]:
        raise BuildError(f"The base image {base_image} does not exist; run 'mlfn base build --tag {base_image}' first.")
    if progress:
        progress(f"Pulling base image {base_image}")
    try:
        client.images.pull(base_image)
    except Exception as e:
        raise BuildError(
            f"The base image {base_image} is not on this machine and cannot be pulled ({_short(e)}); "
            "pull it first, or use 'mlfn base build'."
        ) from None
    return client.images.get(base_image)


def docker_build(client, ctx, ref: str, progress: Optional[Callable[[str], None]] = None) -> str:
    """Run the build; stream the engine's step lines to `progress`; return the image id."""
    say = progress or (lambda m: None)
    image_id = None
    try:
        stream = client.api.build(
            path=str(ctx.path), tag=ref, rm=True, forcerm=True, decode=True, pull=False,
        )
        for chunk in stream:
            if "error" in chunk:
                raise BuildError(f"docker build of {ref} failed: {_clean(chunk['error'])}")
            if "stream" in chunk:
                line = chunk["stream"].strip()
                if line:
                    say(line)
            if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
    except BuildError:
        raise
    except Exception as e:
        text = str(e)
        if "no space left" in text.lower():
            raise BuildError(f"The Docker engine's disk is full while building {ref}; free space (docker system df) and retry.") from None
        raise BuildError(f"docker build of {ref} failed: {_short(e)}") from None
    if image_id is None:
        image_id = client.images.get(ref).id
    return image_id


def _clean(msg: str) -> str:
    msg = msg.strip()
    if "no space left" in msg.lower():
        return "the disk is full (no space left on device); free space and retry"
    return msg.splitlines()[0][:300]


def image_layers(client, image_id: str, base_id: str, base_size: int) -> list:
    """[{name, size_bytes, diff_id}] for base, deps, runtime, models, config."""
    from mlfn.image.context import LAYERS

    attrs = client.api.inspect_image(image_id)
    diff_ids = attrs.get("RootFS", {}).get("Layers", [])
    history = list(reversed(client.api.history(image_id)))  # oldest first
    copies = [h for h in history if "COPY" in (h.get("CreatedBy") or "")]
    ours = copies[-len(LAYERS):] if len(copies) >= len(LAYERS) else copies
    base_layers = diff_ids[: len(diff_ids) - len(ours)]
    layers = [{"name": "base", "size_bytes": int(base_size), "diff_ids": base_layers}]
    for (name, _, dest), h, diff in zip(LAYERS, ours, diff_ids[len(base_layers):]):
        layers.append({"name": name, "size_bytes": int(h.get("Size", 0)), "diff_id": diff, "path": dest})
    return layers


def parse_push_ref(push: str, default_tag: str) -> tuple[str, str]:
    """'REGISTRY/REPO[:TAG]' -> (repository, tag)."""
    push = push.strip()
    if "@" in push:
        raise BuildError(f"--push {push}: give REGISTRY/REPO[:TAG], not a digest.")
    last = push.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = push.rsplit(":", 1)
    else:
        repo, tag = push, default_tag
    if not re.fullmatch(r"[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._/-][a-z0-9]+)*)*", repo) or not \
            re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        raise BuildError(f"--push {push} is not a valid image reference (REGISTRY/REPO[:TAG], lower-case repository).")
    return repo, tag


def docker_push(client, image_id: str, repo: str, tag: str,
                progress: Optional[Callable[[str], None]] = None) -> tuple[str, Optional[int]]:
    """Tag and push with the user's docker credentials; return (manifest digest, size)."""
    say = progress or (lambda m: None)
    registry = repo.split("/")[0] if "/" in repo else "docker.io"
    tagged = image_exists(client, f"{repo}:{tag}") is None
    client.api.tag(image_id, repo, tag)
    try:
        return _push(client, repo, tag, registry, say)
    except BuildError:
        if tagged:  # leave no tag behind for a push that did not happen
            try:
                client.api.remove_image(f"{repo}:{tag}", noprune=True)
            except Exception:
                pass
        raise


def _push(client, repo, tag, registry, say):
    say(f"Pushing {repo}:{tag}")
    digest, size = None, None
    try:
        for chunk in client.api.push(repo, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise BuildError(_push_error(registry, repo, chunk["error"]))
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest, size = aux["Digest"], aux.get("Size")
            status = chunk.get("status")
            if status and chunk.get("id") is None:
                say(status)
    except BuildError:
        raise
    except Exception as e:
        raise BuildError(_push_error(registry, repo, str(e))) from None
    if not digest:
        raise BuildError(f"Pushing {repo}:{tag} to {registry} returned no digest.")
    return digest, size


def _push_error(registry: str, repo: str, msg: str) -> str:
    low = msg.lower()
    if any(w in low for w in ("unauthorized", "authentication required", "denied", "no basic auth credentials")):
        return f"The registry {registry} refused the push of {repo} (unauthorized); run 'docker login {registry}' with an account that may push there."
    if "connection refused" in low or "no such host" in low or "dial tcp" in low or "timeout" in low:
        return f"The registry {registry} is unreachable ({_clean(msg)}); check the address and that it is running."
    if "no space left" in low:
        return f"The registry {registry} ran out of disk space while receiving {repo}."
    return f"Pushing {repo} to {registry} failed: {_clean(msg)}"


def image_info(client, ref: str) -> dict:
    return json.loads(json.dumps(client.api.inspect_image(ref)))
