"""Image benchmark (issue 5): size, build time, reproducibility, and the .pyc cold-start effect.

    python bench/image_bench.py [--skip-baseline] [--skip-mobilenet] [--runs N] [--json FILE]

(a) image size of the digits function and of a MobileNetV2-int8 function, against a
    baseline built here: the same model served by Flask with tensorflow-cpu on the same
    base image (wheels installed on the host with pip --target, like the deps layer).
    Goals: <= 120 MB uncompressed and <= 1/10 of the baseline.
(b) full build time (fresh project, conversion + context + docker build, deps cached) and
    the rebuild after changing only post-processing. Goal: rebuild <= 10 s.
(c) two `--builder oci` builds of the same inputs in different folders: same digest.
(d) cold start (docker run -> /init -> first 200 from /run) of the digits image, read-only root.
    (The base and the deps layer hold sourceless .pyc since issue 17, so there is no
    "without .pyc" variant any more; bench/image_size_bench.py compares the cold start
    with a bare http.server in the same image and measures pulls from a registry.)

Needs Docker, mlfn-base:3.11 (built if missing), TensorFlow (to train and convert) and
network access to PyPI the first time (wheels are cached under <mlfn cache>/bench).
Prints a markdown table; all numbers are measured in this run.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
import yaml  # noqa: E402

MB = 1e6
BASE = "mlfn-base:3.11"
PREFIX = "mlfnb-bench"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def docker():
    import docker as d

    return d.from_env(timeout=900)


def image_size(ref: str) -> int:
    return int(docker().images.get(ref).attrs["Size"])


# -- projects -------------------------------------------------------------------------
def digits_project(dest: Path) -> Path:
    sample = ROOT / "samples" / "digits"
    shutil.copytree(sample, dest, ignore=shutil.ignore_patterns(".mlfn", "__pycache__", "model", "model.keras",
                                                                "*.npy", "*.npz", "*.tflite"))
    subprocess.run([sys.executable, str(dest / "train.py"), str(dest)], check=True, capture_output=True)
    return dest


def mobilenet_project(dest: Path) -> Path:
    import numpy as np
    import tensorflow as tf

    dest.mkdir(parents=True)
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    model.save(dest / "model.keras")
    rng = np.random.default_rng(0)
    np.save(dest / "calibration.npy", rng.uniform(-1, 1, size=(8, 224, 224, 3)).astype("float32"))
    (dest / "labels.txt").write_text("".join(f"class_{i}\n" for i in range(1000)))
    (dest / "mlfn.yaml").write_text(yaml.safe_dump({
        "name": "mobilenet",
        "model": {"path": "model.keras"},
        "quantize": {"mode": "int8", "representative_data": "calibration.npy", "representative_samples": 8},
        "pipeline": {
            "pre": ["decode_image", {"convert": {"mode": "RGB"}}, {"resize": {"width": 224, "height": 224}},
                    {"scale": {"factor": 1 / 127.5, "offset": -1.0}}],
            "post": ["softmax", {"top_k": {"k": 5}}],
            "labels": "labels.txt",
        },
        "build": {"base_image": BASE},
    }, sort_keys=False))
    return dest


def edit_post(project: Path) -> None:
    path = project / "mlfn.yaml"
    data = yaml.safe_load(path.read_text())
    data["pipeline"]["post"] = ["softmax", {"top_k": {"k": 2}}]
    path.write_text(yaml.safe_dump(data, sort_keys=False))


# -- the TensorFlow + Flask baseline -------------------------------------------------------
BASELINE_APP = '''
import base64, io, os
import numpy as np
import tensorflow as tf
from flask import Flask, jsonify, request
from PIL import Image

model = tf.keras.models.load_model("/app/model.keras")
app = Flask(__name__)

@app.post("/predict")
def predict():
    img = Image.open(io.BytesIO(base64.b64decode(request.get_json()["image"])))
    x = np.asarray(img.convert("{mode}").resize(({w}, {h})), dtype="float32") * {factor} + {offset}
    x = x.reshape((1, {h}, {w}, {c}))
    y = tf.nn.softmax(model(x)).numpy()[0]
    return jsonify({{"label": str(int(y.argmax())), "score": float(y.max())}})

if __name__ == "__main__":
    app.run(host="0.0.0.0", port=int(os.environ.get("PORT", "8080")))
'''


def baseline_deps() -> Path:
    from mlfn.image.base_image import cache_dir
    from mlfn.image.deps import PLATFORMS

    site = cache_dir() / "bench" / "tf-flask-site"
    if (site / ".done").exists():
        return site
    if site.exists():
        shutil.rmtree(site)
    reqs = [f"tensorflow-cpu=={_version('tensorflow-cpu') or '2.21.0'}", "flask", "pillow"]
    log(f"baseline: pip install --target {site} {' '.join(reqs)} (once; large download)")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(site),
           "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run(cmd + reqs, check=True)
    (site / ".done").write_text("ok")
    return site


def _version(dist):
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


def build_baseline(project: Path, tag: str, mode: str, size: int, channels: int, factor: float, offset: float) -> int:
    site = baseline_deps()
    with tempfile.TemporaryDirectory(prefix="mlfn-bench-") as tmp:
        ctx = Path(tmp)
        shutil.copyfile(project / "model.keras", ctx / "model.keras")
        (ctx / "app.py").write_text(BASELINE_APP.format(mode=mode, w=size, h=size, c=channels, factor=factor, offset=offset))
        shutil.copytree(site, ctx / "deps", copy_function=os.link)
        (ctx / "Dockerfile").write_text(
            f"FROM {BASE}\nENV PYTHONPATH=/opt/deps\nCOPY deps/ /opt/deps/\nCOPY model.keras app.py /app/\n"
            'USER 65532\nEXPOSE 8080\nCMD ["python3", "/app/app.py"]\n')
        log(f"baseline: docker build {tag}")
        for chunk in docker().api.build(path=str(ctx), tag=tag, rm=True, decode=True):
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
    return image_size(tag)


# -- cold start -------------------------------------------------------------------------
def cold_start(ref: str, png: bytes, runs: int) -> list:
    client = docker()
    body = {"value": {"image": base64.b64encode(png).decode()}}
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        c = client.containers.run(ref, detach=True, read_only=True, tmpfs={"/tmp": ""},
                                  ports={"8080/tcp": ("127.0.0.1", None)}, labels={"dev.mlfn.test": "bench"})
        try:
            url = None
            while True:
                if url is None:
                    c.reload()
                    ports = c.attrs["NetworkSettings"]["Ports"].get("8080/tcp")
                    if ports:
                        url = f"http://127.0.0.1:{ports[0]['HostPort']}"
                if url:
                    try:  # /init (403 once done) before /run, as the invoker does
                        if (requests.post(url + "/init", json={"value": {}}, timeout=2).status_code in (200, 403)
                                and requests.post(url + "/run", json=body, timeout=2).status_code == 200):
                            break
                    except requests.RequestException:
                        pass
                if time.monotonic() - t0 > 60:
                    raise RuntimeError(f"{ref} did not answer within 60 s")
                time.sleep(0.005)
            times.append(time.monotonic() - t0)
        finally:
            c.remove(force=True)
    return times


# -- main -------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-baseline", action="store_true", help="do not build the TensorFlow + Flask baselines")
    ap.add_argument("--skip-mobilenet", action="store_true", help="digits only")
    ap.add_argument("--runs", type=int, default=5, help="cold starts per image")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args()

    from mlfn.image import build_base_image, build_image
    from mlfn.config import load_config

    build_base_image(BASE)
    out: dict = {}
    rows = []
    created: list = []
    with tempfile.TemporaryDirectory(prefix="mlfn-bench-") as tmp:
        tmp = Path(tmp)
        log("digits: training the sample")
        digits = digits_project(tmp / "a" / "digits")

        # (b) full build, then a post-processing-only rebuild
        t0 = time.monotonic()
        full = build_image(load_config(str(digits)), tag=f"{PREFIX}/digits:full")
        out["digits_full_build_s"] = time.monotonic() - t0
        created.append(full.image)
        edit_post(digits)
        t0 = time.monotonic()
        post = build_image(load_config(str(digits)), tag=f"{PREFIX}/digits:post")
        out["digits_rebuild_post_only_s"] = time.monotonic() - t0
        created.append(post.image)
        changed = [a["name"] for a, b in zip(full.layers, post.layers)
                   if (a.get("diff_id") or a.get("diff_ids")) != (b.get("diff_id") or b.get("diff_ids"))]
        out["digits_rebuild_changed_layers"] = changed

        # (a) sizes
        out["digits_size_mb"] = full.size_bytes / MB
        out["digits_layers_mb"] = {layer["name"]: round(layer["size_bytes"] / MB, 2) for layer in full.layers}
        rows.append(("digits (int8)", full.size_bytes))

        # (c) reproducible oci builds in two folders
        digits_b = tmp / "b" / "digits"
        shutil.copytree(digits, digits_b, ignore=shutil.ignore_patterns(".mlfn"))
        t0 = time.monotonic()
        oci_a = build_image(load_config(str(digits)), builder="oci", oci_layout=str(tmp / "oci-a"))
        out["digits_oci_build_s"] = time.monotonic() - t0
        oci_b = build_image(load_config(str(digits_b)), builder="oci", oci_layout=str(tmp / "oci-b"))
        out["oci_digest_a"], out["oci_digest_b"] = oci_a.digest, oci_b.digest
        out["oci_reproducible"] = oci_a.digest == oci_b.digest
        out["digits_oci_compressed_mb"] = oci_a.compressed_size_bytes / MB

        # (d) cold start
        png = (digits / "inputs" / "digit-7.png").read_bytes()
        cold_start(full.image, png, 1)  # warm the page cache
        out["cold_start_median_ms"] = statistics.median(cold_start(full.image, png, args.runs)) * 1000

        if not args.skip_baseline:
            tf_digits = build_baseline(digits, f"{PREFIX}/digits-tf-flask:latest", "L", 8, 1, 1 / 255, 0.0)
            created.append(f"{PREFIX}/digits-tf-flask:latest")
            rows.append(("digits: TF + Flask baseline", tf_digits))
            out["digits_baseline_mb"] = tf_digits / MB
            out["digits_ratio"] = full.size_bytes / tf_digits

        if not args.skip_mobilenet:
            log("mobilenet: building MobileNetV2 (weights=None) and its int8 function")
            mob = mobilenet_project(tmp / "mobilenet")
            t0 = time.monotonic()
            m = build_image(load_config(str(mob)), tag=f"{PREFIX}/mobilenet:int8")
            out["mobilenet_full_build_s"] = time.monotonic() - t0
            created.append(m.image)
            out["mobilenet_size_mb"] = m.size_bytes / MB
            out["mobilenet_model_mb"] = next(layer["size_bytes"] for layer in m.layers if layer["name"] == "models") / MB
            rows.append(("MobileNetV2 (int8)", m.size_bytes))
            if not args.skip_baseline:
                tf_mob = build_baseline(mob, f"{PREFIX}/mobilenet-tf-flask:latest", "RGB", 224, 3, 1 / 127.5, -1.0)
                created.append(f"{PREFIX}/mobilenet-tf-flask:latest")
                rows.append(("MobileNetV2: TF + Flask baseline", tf_mob))
                out["mobilenet_baseline_mb"] = tf_mob / MB
                out["mobilenet_ratio"] = m.size_bytes / tf_mob

    client = docker()
    for ref in reversed(created):
        try:
            client.images.remove(ref, force=True)
        except Exception:
            pass

    print("| image | uncompressed size |")
    print("|---|---|")
    for name, size in rows:
        print(f"| {name} | {size / MB:.1f} MB |")
    print()
    print("| measure | value | goal |")
    print("|---|---|---|")
    print(f"| digits layers (MB) | {out['digits_layers_mb']} | |")
    if "digits_ratio" in out:
        print(f"| digits / baseline | {out['digits_ratio']:.3f} | <= 0.1 |")
    if "mobilenet_ratio" in out:
        print(f"| MobileNetV2 / baseline | {out['mobilenet_ratio']:.3f} | <= 0.1 |")
    if "mobilenet_size_mb" in out:
        print(f"| MobileNetV2 function size | {out['mobilenet_size_mb']:.1f} MB (model {out['mobilenet_model_mb']:.1f} MB) | <= 120 MB |")
        print(f"| MobileNetV2 full build (incl. int8 conversion) | {out['mobilenet_full_build_s']:.1f} s | |")
    print(f"| digits full build (fresh project, deps cached) | {out['digits_full_build_s']:.1f} s | |")
    print(f"| digits rebuild, post-processing changed | {out['digits_rebuild_post_only_s']:.1f} s "
          f"(layers rebuilt: {', '.join(out['digits_rebuild_changed_layers'])}) | <= 10 s |")
    print(f"| digits --builder oci build (conversion, deps and layer caches warm) | {out['digits_oci_build_s']:.1f} s, "
          f"{out['digits_oci_compressed_mb']:.1f} MB compressed | |")
    print(f"| oci digests, two folders | {'identical' if out['oci_reproducible'] else 'DIFFERENT'} "
          f"({out['oci_digest_a'][:19]}…) | identical |")
    print(f"| cold start to first /run (median of {args.runs}) | {out['cold_start_median_ms']:.0f} ms | |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
