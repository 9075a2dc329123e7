"""The real function image, run the way the Knative manifest mlfn renders asks for it.

No Knative cluster exists here, so Docker plays the kubelet: the container gets exactly
the manifest's image config, env, port and $PORT/K_* variables, a read-only root file
system with a writable /tmp (the runtime contract), no capabilities, no privilege
escalation and the memory limit; `runAsNonRoot: true` is checked the kubelet's way (a
numeric, non-zero image user). The readiness probe path of the manifest must answer 200,
and the Knative target's `invoke` reaches the function through the fake cluster's URL with a
Host header (the `host` override for clusters without DNS)."""
import dataclasses
import json
import time
import uuid

import pytest
import requests

from mlfn.lifecycle import Lifecycle
from mlfn.targets.knative.target import knative_target

from .conftest import NS


def _memory_bytes(quantity: str) -> int:
    units = {"Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


@pytest.mark.docker
@pytest.mark.slow
def test_the_image_runs_as_the_manifest_says(digits_image, digits_project, api, kubeconfig):
    import docker

    from mlfn.config import load_config
    from mlfn.releases import version_spec

    cfg = load_config(str(digits_project))
    target = knative_target(cfg, kubeconfig=kubeconfig, wait_timeout=10, poll_interval=0.02, error_window=0.1)
    # a cluster pulls from a registry (a local tag is refused); the fake one pulls nothing and
    # Docker below runs the local image in the kubelet's place
    spec = dataclasses.replace(version_spec(cfg, digits_image), image=f"localhost:5000/{digits_image.image}")
    deployed = Lifecycle(target).publish(spec)
    assert deployed.version.name == "v1" and deployed.version.digest == digits_image.digest
    svc = api.kube.service(cfg.name)
    pod = svc["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    port = c["ports"][0]["containerPort"]

    client = docker.from_env()
    user = (client.images.get(digits_image.image).attrs["Config"].get("User") or "0").split(":")[0]
    assert user.isdigit() and int(user) != 0, f"runAsNonRoot needs a numeric non-root image user, got {user!r}"

    env = {e["name"]: e["value"] for e in c.get("env", [])}
    env.update(PORT=str(port), K_SERVICE=cfg.name, K_CONFIGURATION=cfg.name,
               K_REVISION=svc["spec"]["template"]["metadata"]["name"])
    container = client.containers.run(
        digits_image.image, detach=True, name=f"mlfnkn-{uuid.uuid4().hex[:8]}", environment=env,
        read_only=True, tmpfs={"/tmp": "rw,size=16m"}, cap_drop=["ALL"], security_opt=["no-new-privileges"],
        mem_limit=_memory_bytes(c["resources"]["limits"]["memory"]), ports={f"{port}/tcp": ("127.0.0.1", None)},
    )
    try:
        container.reload()
        host_port = container.attrs["NetworkSettings"]["Ports"][f"{port}/tcp"][0]["HostPort"]
        probe = f"http://127.0.0.1:{host_port}{c['readinessProbe']['httpGet']['path']}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(probe, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            container.reload()
            assert container.status == "running", container.logs().decode()[-2000:]
            assert time.monotonic() < deadline, "the readiness probe never answered 200"
            time.sleep(0.2)

        payload = json.loads((digits_project / "inputs" / "digit-3.json").read_text())
        via_ingress = knative_target(cfg, kubeconfig=kubeconfig, host=f"127.0.0.1:{host_port}")
        out = via_ingress.invoke(cfg.name, payload)
        assert out.status_code == 200 and out.version == "v1"
        (prediction,) = out.result["predictions"]
        assert prediction["label"] in [str(d) for d in range(10)] and len(prediction["top_k"]) == 3
        out = via_ingress.invoke(cfg.name, payload, version="v1")  # the version's own tag URL
        assert out.result["predictions"][0]["label"] == prediction["label"]
        # the same through the CLI: mlfn invoke NAME -t knative --host ADDRESS
        from click.testing import CliRunner

        from mlfn.cli import main

        r = CliRunner().invoke(main, ["invoke", cfg.name, "-c", str(digits_project), "-t", "knative",
                                      "--kubeconfig", str(kubeconfig), "--host", f"127.0.0.1:{host_port}",
                                      "--json", str(digits_project / "inputs" / "digit-3.json"), "-o", "json"])
        assert r.exit_code == 0, r.output
        cli_out = json.loads(r.stdout)
        assert cli_out["version"] == "v1" and cli_out["result"]["predictions"][0]["label"] == prediction["label"]
        with pytest.raises(Exception, match=r"answered HTTP 400"):
            via_ingress.invoke(cfg.name, {"inputs": "not a tensor"})
        assert requests.get(probe, timeout=2).status_code == 200  # bad input did not hurt it
    finally:
        container.remove(force=True)
    assert deployed.aliases[0].url == f"http://{cfg.name}.{NS}.example.com"
