"""Image size and cold start (issue 17, "Half the image").

    python bench/image_size_bench.py [--base TAG] [--runs N] [--skip-registry] [--skip-baseline] [--json FILE]

(a) size of the digits function image, uncompressed and compressed (gzip layers as a
    registry stores them, from the daemonless builder), per layer and per package, as
    `mlfn build --output json` reports them.
(b) cold start on a node that has the image: `docker run -d` -> first correct answer
    (POST /run with digit-7.png, label "7") of the function, side by side with the SAME
    image running a bare `python3 -m http.server` (first 200 on GET /), interleaved,
    read-only root; median of --runs. Goal: function <= bare server + 60 ms.
(c) cold start from a registry (scripts/registry.sh, Debian's docker-registry on
    127.0.0.1): push, `docker rmi`, then time pull + start + first correct answer, for the
    function and for the Flask + TensorFlow baseline of bench/image_bench.py on the same
    base. Layers the node already holds (the base, when other images use it) are not
    pulled again; the table says how many bytes each pull moved.

Needs Docker, TensorFlow (to train the sample) and the base image (`--base`, built if
missing). Prints markdown tables; every number is measured in this run.
"""
from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import requests  # noqa: E402

MB = 1e6
PREFIX = "mlfnb-size"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sh(*args: str, timeout: float = 900) -> str:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()[-400:]}")
    return r.stdout.strip()


def first_answer(image: str, cmd: list, probe, timeout: float = 120) -> float:
    """Seconds from `docker run -d` to the first probe(url) that returns True."""
    t0 = time.monotonic()
    cid = sh("docker", "run", "-d", "--read-only", "--tmpfs", "/tmp", "-p", "127.0.0.1::8080",
             "--label", "dev.mlfn.test=bench", image, *cmd)
    try:
        url = None
        while True:
            if url is None:
                out = subprocess.run(["docker", "port", cid, "8080/tcp"], capture_output=True, text=True).stdout
                if out.strip():
                    url = "http://127.0.0.1:" + out.splitlines()[0].rsplit(":", 1)[1]
            if url:
                try:
                    if probe(url):
                        return time.monotonic() - t0
                except requests.RequestException:
                    pass
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{image} gave no right answer within {timeout} s: {sh('docker', 'logs', cid)[-500:]}")
            time.sleep(0.005)
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


def run_probe(png: bytes, path: str = "/run", body_key: str = "value"):
    """A probe for `first_answer`: on /run, the OpenWhisk invoker's /init first (once; the
    runtime answers /run before /init with 403), then the request; True on label "7"."""
    body = {"image": base64.b64encode(png).decode()}
    body = {body_key: body} if body_key else body
    initialized = path != "/run"

    def probe(url: str) -> bool:
        nonlocal initialized
        if not initialized:
            init = requests.post(url + "/init", json={"value": {"name": "digits", "env": {}}}, timeout=5)
            initialized = init.status_code == 200
            if not initialized:
                return False
        r = requests.post(url + path, json=body, timeout=5)
        if r.status_code != 200:
            return False
        doc = r.json()
        label = doc["predictions"][0]["label"] if "predictions" in doc else doc.get("label")
        if label != "7":
            raise RuntimeError(f"wrong first answer: {doc}")
        return True
    return probe


def bare_probe(url: str) -> bool:
    return requests.get(url + "/", timeout=5).status_code == 200


def node_cold_start(images: list, png: bytes, runs: int) -> dict:
    """(b): per image, the function and a bare stdlib server in that image; all
    interleaved round by round, so machine load falls on every side alike."""
    bare_cmd = ["python3", "-m", "http.server", "8080", "--directory", "/tmp"]
    times = {image: ([], []) for image in images}
    for round_no in range(runs + 1):  # round 0 warms the page cache and is not counted
        for image in images:
            fn_s = first_answer(image, [], run_probe(png))
            bare_s = first_answer(image, bare_cmd, bare_probe)
            if round_no:
                times[image][0].append(fn_s)
                times[image][1].append(bare_s)
    return {image: {"function_ms": statistics.median(fn) * 1000, "bare_ms": statistics.median(bare) * 1000,
                    "delta_ms": statistics.median([f - b for f, b in zip(fn, bare)]) * 1000, "runs": runs}
            for image, (fn, bare) in times.items()}


# Run inside an image: median wall time of fresh `python3 -c ...` processes, and median
# CPU time (user + sys, from wait4) of the start-up steps: CPU time hardly moves with the
# load of a shared machine, so it says where a cold start's milliseconds go.
IMPORT_TIMES = r"""
import os, statistics, subprocess, sys, time
def t(code, n=15):
    xs = []
    for _ in range(n):
        t0 = time.perf_counter(); subprocess.run([sys.executable, "-c", code], check=True)
        xs.append(time.perf_counter() - t0)
    return round(statistics.median(xs) * 1000, 1)
def cpu(code, n=15):
    xs = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os.execv(sys.executable, [sys.executable, "-c", code])
        _, status, usage = os.wait4(pid, 0)
        assert status == 0, code
        xs.append(usage.ru_utime + usage.ru_stime)
    return round(statistics.median(xs) * 1000, 1)
START = ("import os; from mlfn_runtime.http_server import make_server; "
         "make_server(os.environ['MLFN_FUNCTION_DIR'], '127.0.0.1', 0).server_close()")
print(t("pass"), t("import numpy"), t("import numpy; from ai_edge_litert.interpreter import Interpreter; "
                                       "import PIL.Image; import mlfn_runtime.serving"),
      cpu("pass"), cpu("import http.server"), cpu("import numpy"), cpu(START))
"""


def import_times(image: str) -> dict:
    """(b'): in one container, `python3 -c pass`, `import numpy` and every import of a
    request (wall time); CPU time of python, the bare server's imports, numpy, and the
    runtime's start-up up to a bound port (imports + model load)."""
    out = sh("docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", image, "python3", "-c", IMPORT_TIMES)
    values = [float(x) for x in out.split()[-7:]]
    return dict(zip(["python_ms", "import_numpy_ms", "all_imports_ms", "cpu_python_ms", "cpu_http_server_ms",
                     "cpu_numpy_ms", "cpu_runtime_start_ms"], values))


def registry_cold_start(image: str, registry: str, name: str, probe, also_remove: str = "") -> dict:
    """(c): push to the registry, remove locally (and `also_remove`, e.g. the base, so that
    every layer is pulled), then pull + start + first right answer."""
    remote = f"{registry}/{PREFIX}/{name}:latest"
    sh("docker", "tag", image, remote)
    sh("docker", "push", remote)
    sh("docker", "rmi", remote)
    subprocess.run(["docker", "rmi", image], capture_output=True)
    if also_remove:
        sh("docker", "rmi", also_remove)
    t0 = time.monotonic()
    pulled = sh("docker", "pull", remote)
    pull_s = time.monotonic() - t0
    start_s = first_answer(remote, [], probe)
    manifest = requests.get(f"http://{registry}/v2/{PREFIX}/{name}/manifests/latest", timeout=10, headers={
        "Accept": "application/vnd.docker.distribution.manifest.v2+json"}).json()
    sh("docker", "tag", remote, image)
    sh("docker", "rmi", remote)
    return {"pull_s": pull_s, "start_to_answer_s": start_s, "total_s": pull_s + start_s,
            "compressed_mb": sum(layer["size"] for layer in manifest["layers"]) / MB,
            "layers_pulled": pulled.count("Pull complete") or pulled.count("Download complete")}


def sizes(result) -> dict:
    return {"image": result.image, "size_mb": result.size_bytes / MB,
            "compressed_mb": (result.compressed_size_bytes or 0) / MB,
            "layers": [{"name": layer["name"], "size_mb": round(layer["size_bytes"] / MB, 2),
                        "compressed_mb": round((layer.get("compressed_size_bytes") or 0) / MB, 2),
                        "packages_mb": {k: round(v / MB, 2) for k, v in (layer.get("packages") or {}).items()}}
                       for layer in result.layers]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="mlfn-base:3.11", help="base image tag (built with mlfn base build if missing)")
    ap.add_argument("--runs", type=int, default=7, help="cold starts per side (median)")
    ap.add_argument("--skip-registry", action="store_true")
    ap.add_argument("--skip-baseline", action="store_true", help="no Flask + TensorFlow baseline in (c)")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    ap.add_argument("--compare-with", action="append", default=[], metavar="IMAGE",
                    help="another digits image (e.g. one built before a change) measured in the same rounds")
    ap.add_argument("--cold-node", action="store_true",
                    help="also remove the base before the function's pull (every layer is pulled; "
                         "only for a base tag no other image uses; it is rebuilt afterwards)")
    a = ap.parse_args()

    import image_bench
    from mlfn.config import load_config
    from mlfn.image import build_base_image, build_image

    build_base_image(a.base)
    out: dict = {"base": a.base}
    with tempfile.TemporaryDirectory(prefix="mlfn-bench-") as tmp:
        project = image_bench.digits_project(Path(tmp) / "digits")
        overrides = {"build.base_image": a.base}
        built = build_image(load_config(str(project), overrides=overrides), tag=f"{PREFIX}/digits:bench")
        out["size"] = sizes(built)
        png = (project / "inputs" / "digit-7.png").read_bytes()
        log(f"(b) node cold start, {a.runs} runs each")
        out["node_cold_start"] = node_cold_start([built.image] + a.compare_with, png, a.runs)
        out["import_times"] = {image: import_times(image) for image in [built.image] + a.compare_with}
        log(json.dumps(out, indent=2))
        if not a.skip_registry:
            out["registry"] = registry_part(a, project, built.image, png)
    print_tables(out)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 0


def registry_part(a, project: Path, image: str, png: bytes) -> dict:
    state = Path(tempfile.mkdtemp(prefix="mlfn-bench-registry-"))
    registry = sh("sh", str(ROOT / "scripts" / "registry.sh"), "start", str(state))
    try:
        log(f"(c) registry cold start via {registry}")
        res = {"function": registry_cold_start(image, registry, "digits", run_probe(png),
                                               also_remove=a.base if a.cold_node else "")}
        if a.cold_node:
            from mlfn.image import build_base_image

            build_base_image(a.base)
        if not a.skip_baseline:
            tag = build_tf_baseline(project, a.base)
            res["tf_flask"] = registry_cold_start(tag, registry, "digits-tf-flask",
                                                  run_probe(png, path="/predict", body_key=""))
            subprocess.run(["docker", "rmi", tag], capture_output=True)
        return res
    finally:
        subprocess.run(["sh", str(ROOT / "scripts" / "registry.sh"), "stop", str(state)], capture_output=True)
        subprocess.run(["docker", "rmi", image], capture_output=True)


def build_tf_baseline(project: Path, base: str) -> str:
    """bench/image_bench.py's Flask + TensorFlow baseline on `base`, plus the standard
    library's unittest (TensorFlow imports it; mlfn's base leaves it out)."""
    import shutil
    import unittest

    import image_bench

    image_bench.BASE = base
    plain = f"{PREFIX}/digits-tf-flask:plain"
    image_bench.build_baseline(project, plain, "L", 8, 1, 1 / 255, 0.0)
    tag = f"{PREFIX}/digits-tf-flask:latest"
    with tempfile.TemporaryDirectory(prefix="mlfn-bench-") as ctx:
        shutil.copytree(Path(unittest.__file__).parent, Path(ctx) / "unittest",
                        ignore=shutil.ignore_patterns("__pycache__", "test"))
        (Path(ctx) / "Dockerfile").write_text(f"FROM {plain}\nCOPY unittest /opt/stdlib-extra/unittest\n"
                                              "ENV PYTHONPATH=/opt/deps:/opt/stdlib-extra\n")
        sh("docker", "build", "-q", "-t", tag, ctx)
    subprocess.run(["docker", "rmi", plain], capture_output=True)
    return tag


def print_tables(out: dict) -> None:
    s = out["size"]
    print(f"| digits image on {out['base']} | uncompressed | compressed | packages |")
    print("|---|---|---|---|")
    for layer in s["layers"]:
        pk = ", ".join(f"{k} {v}" for k, v in layer["packages_mb"].items())
        print(f"| {layer['name']} | {layer['size_mb']:.1f} MB | {layer['compressed_mb']:.1f} MB | {pk} |")
    print(f"| **total** | **{s['size_mb']:.1f} MB** | **{s['compressed_mb']:.1f} MB** | |")
    print()
    print("| cold start on a node that has the image, medians | bare `http.server` (first 200) "
          "| function (first correct /run) | difference (goal <= 60 ms) |")
    print("|---|---|---|---|")
    for image, c in out["node_cold_start"].items():
        print(f"| {image} ({c['runs']} rounds) | {c['bare_ms']:.0f} ms | {c['function_ms']:.0f} ms | {c['delta_ms']:+.0f} ms |")
    print()
    print("| inside the container (15 runs, median) | `python3 -c pass` | `import numpy` | numpy + LiteRT + Pillow + runtime |")
    print("|---|---|---|---|")
    for image, t in out["import_times"].items():
        print(f"| {image} | {t['python_ms']:.0f} ms | {t['import_numpy_ms']:.0f} ms | {t['all_imports_ms']:.0f} ms |")
    print()
    print("| CPU time (user + sys, 15 runs, median) | `python3 -c pass` | `import http.server` | `import numpy` "
          "| runtime start: imports + model load, port bound |")
    print("|---|---|---|---|---|")
    for image, t in out["import_times"].items():
        print(f"| {image} | {t['cpu_python_ms']:.0f} ms | {t['cpu_http_server_ms']:.0f} ms | {t['cpu_numpy_ms']:.0f} ms "
              f"| {t['cpu_runtime_start_ms']:.0f} ms |")
    if "registry" in out:
        print()
        print("| cold start from a local registry | compressed | pull | start -> first answer | total |")
        print("|---|---|---|---|---|")
        for name, r in out["registry"].items():
            print(f"| {name} | {r['compressed_mb']:.1f} MB | {r['pull_s']:.2f} s | {r['start_to_answer_s']:.2f} s "
                  f"| {r['total_s']:.2f} s |")


if __name__ == "__main__":
    sys.exit(main())
