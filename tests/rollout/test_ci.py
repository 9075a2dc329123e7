"""The GitHub composite action (action.yml) and the Tekton Task (ci/tekton/) run as written:
their YAML is parsed, the script of the rollout step is taken out, its parameters are filled
in the way each system does (${{ inputs.* }} in `env:`, $(params.*) in the script), and it
runs with bash against the local controller, deploying the digits sample for real."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]


def bin_path() -> str:
    """PATH with this interpreter's scripts first: the `mlfn` the scripts call is this checkout's."""
    return str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]


def project(digits_project, tmp_path, name: str, top_k: int) -> Path:
    """A copy of the trained digits sample as function `name`; top_k changes its content."""
    dest = tmp_path / name
    shutil.copytree(digits_project, dest)
    text = (dest / "mlfn.yaml").read_text().replace("name: digits", f"name: {name}", 1)
    (dest / "mlfn.yaml").write_text(re.sub(r"top_k: \{k: 3\}", f"top_k: {{k: {top_k}}}", text))
    (dest / "load").mkdir()
    shutil.copy(dest / "validation.npz", dest / "load" / "validation.npz")
    return dest


def run_action(inputs: dict, tmp_path) -> dict:
    """The action's rollout step, as GitHub runs it: env from `${{ inputs.x }}`, then bash."""
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    step = next(s for s in action["runs"]["steps"] if s.get("id") == "rollout")
    defaults = {k: v.get("default", "") for k, v in action["inputs"].items()}
    values = {**defaults, **inputs}
    contexts = {"runner.temp": str(tmp_path)}

    def fill(text: str) -> str:
        def one(m):
            expr = m.group(1).strip()
            return values[expr[len("inputs."):]] if expr.startswith("inputs.") else contexts[expr]
        return re.sub(r"\$\{\{([^}]*)\}\}", one, str(text))

    env = {**os.environ, "PATH": bin_path(), "GITHUB_OUTPUT": str(tmp_path / "github_output")}
    env.update({k: fill(v) for k, v in step["env"].items()})
    (tmp_path / "github_output").write_text("")
    done = subprocess.run(["bash", "-e", "-c", step["run"]], env=env, capture_output=True, text=True, timeout=600)
    outputs = dict(line.split("=", 1) for line in (tmp_path / "github_output").read_text().splitlines())
    return {"code": done.returncode, "outputs": outputs, "stderr": done.stderr}


def run_task(params: dict, workspace: Path, tmp_path, secret: dict) -> dict:
    """The Task's step, as Tekton runs it: $(params.x), $(results.x.path) and
    $(workspaces.x.*) substituted in the script; the Secret's keys as env."""
    task = yaml.safe_load((ROOT / "ci" / "tekton" / "mlfn-deploy-task.yaml").read_text())
    step = task["spec"]["steps"][0]
    values = {p["name"]: p.get("default", "") for p in task["spec"]["params"]}
    values.update(params)
    results = {r["name"]: tmp_path / f"result-{r['name']}" for r in task["spec"]["results"]}
    script = re.sub(r"\$\(params\.([\w-]+)\)", lambda m: values[m.group(1)], step["script"])
    script = re.sub(r"\$\(results\.([\w-]+)\.path\)", lambda m: str(results[m.group(1)]), script)
    script = script.replace("$(workspaces.kubeconfig.bound)", "false").replace(
        "$(workspaces.kubeconfig.path)", "").replace("$(workspaces.source.path)", str(workspace))
    env = {**os.environ, "PATH": bin_path()}
    env.update({e["name"]: secret[e["valueFrom"]["secretKeyRef"]["key"]] for e in step["env"]})
    path = tmp_path / "step.sh"
    path.write_text(script)
    done = subprocess.run(["bash", str(path)], env=env, cwd=workspace, capture_output=True, text=True, timeout=600)
    return {"code": done.returncode, "stderr": done.stderr,
            "results": {k: p.read_text() if p.exists() else None for k, p in results.items()}}


def test_action_and_task_deploy_and_roll_out(digits_project, digits_image, local_api, tmp_path, fn_name):
    from mlfn.targets.openwhisk.wskprops import GUEST_AUTH

    name = fn_name.replace("_", "-")[:30]
    creds = {"apihost": local_api.url, "auth": GUEST_AUTH}
    rollout = {"steps": "50,100", "interval": "2s", "min-requests": "3", "max-wait": "60s", "failures": "2",
               "max-error-rate": "5%", "load": "load", "rate": "8", "probe": "validation.npz",
               "max-accuracy-drop": "1"}
    first = project(digits_project, tmp_path / "a", name, top_k=3)
    out = run_action({"config": str(first), "target": "openwhisk", "namespace": "guest", "install": "", **creds,
                      **rollout}, tmp_path / "a")
    assert out["code"] == 0, out["stderr"]
    assert out["outputs"] == {"version": "v1", "alias-state": '{"v1": 100}', "result": "promoted"}

    second = project(digits_project, tmp_path / "b", name, top_k=2)  # new content: v2, rolled out
    out = run_action({"config": str(second), "target": "openwhisk", "namespace": "guest", "install": "",
                      **creds, **rollout}, tmp_path / "b")
    assert out["code"] == 0, out["stderr"]
    assert out["outputs"] == {"version": "v2", "alias-state": '{"v2": 100}', "result": "promoted"}
    assert "step 1/2: v2 takes 50%" in out["stderr"] and "quality: PASS" in out["stderr"]
    assert GUEST_AUTH not in out["stderr"]

    third = project(digits_project, tmp_path / "c", name, top_k=1)
    got = run_task({"config": "mlfn.yaml", "target": "openwhisk", "namespace": "guest", "install": "",
                    **rollout}, third, tmp_path / "c", creds)
    assert got["code"] == 0, got["stderr"]
    assert got["results"] == {"version": "v3", "alias-state": '{"v3": 100}', "result": "promoted"}
