"""Start, stop and look at the embedded local controller (`mlfn local up/down/status`).

State (entities, activations, pid and log files) lives in `~/.mlfn/local/`
(`MLFN_LOCAL_HOME` overrides). `up` starts the server (mlfn.targets.local.api) as a
background daemon by default; its run file records pid and port.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mlfn.errors import TargetError
from mlfn.targets.local.home import AUTH_MODES, local_key, new_key, state_dir, wskprops_path, write_wskprops

DEFAULT_PORT = 3233



def _runfile() -> Path:
    return state_dir() / "server.json"


def local_apihost(port: Optional[int] = None) -> str:
    if port:
        return f"http://127.0.0.1:{port}"
    env = os.environ.get("MLFN_LOCAL_APIHOST")
    if env:
        return env
    info = read_runfile()
    return f"http://127.0.0.1:{(info or {}).get('port') or DEFAULT_PORT}"


@dataclass
class LocalStatus:
    running: bool
    apihost: str
    pid: Optional[int] = None
    state_dir: str = ""
    log_file: str = ""
    containers: int = 0
    functions: int = 0
    key: str = "guest"  # which key the controller accepts: "guest" (well-known) or "private"
    wskprops: str = ""  # the wskprops file with that key (for wsk: WSK_CONFIG_FILE=...)
    message: str = ""


def read_runfile() -> Optional[dict]:
    try:
        return json.loads(_runfile().read_text())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ping(apihost: str, timeout: float = 1.0) -> bool:
    import requests

    try:
        return requests.get(apihost + "/api/v1", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def _check_port(st: "LocalStatus", port: Optional[int], fix: str) -> None:
    """A --port that is not the running controller's is a mistake to name, not to ignore."""
    if port and st.running and st.apihost != f"http://127.0.0.1:{port}":
        raise TargetError(f"The local controller for {st.state_dir} runs on {st.apihost}, not on port {port}; "
                          f"{fix}")


def status(port: Optional[int] = None) -> LocalStatus:
    """Whether the controller of this state folder runs; with port, also that it runs there."""
    st = current_status()
    _check_port(st, port, "drop --port, or set MLFN_LOCAL_HOME to the folder of the controller on that port.")
    return st


def current_status() -> LocalStatus:
    info = read_runfile() or {}
    port = info.get("port") or DEFAULT_PORT
    apihost = f"http://127.0.0.1:{port}"
    pid = info.get("pid")
    running = bool(pid and pid_alive(pid) and ping(apihost))
    key = local_key()
    st = LocalStatus(running=running, apihost=apihost, pid=pid if running else None, state_dir=str(state_dir()),
                     log_file=str(state_dir() / "server.log"), key=key.kind, wskprops=str(wskprops_path()))
    if running:
        import requests

        auth = tuple(key.auth.split(":", 1))
        try:
            st.functions = len(requests.get(f"{apihost}/api/v1/namespaces/_/packages?limit=200", auth=auth,
                                            timeout=2).json())
        except (requests.RequestException, ValueError):
            pass
        try:
            import docker

            from mlfn.targets.local.pool import LABEL, OWNER_LABEL
            from mlfn.targets.local.home import owner_id

            labels = [f"{LABEL}=1", f"{OWNER_LABEL}={owner_id(state_dir())}"]
            st.containers = len(docker.from_env().containers.list(filters={"label": labels}))
        except Exception:  # noqa: BLE001 - docker not reachable: leave 0
            pass
    st.message = f"running on {apihost} (pid {pid})" if running else "not running; start it with 'mlfn local up'"
    return st


def up(port: Optional[int] = DEFAULT_PORT, foreground: bool = False, idle_seconds: float = 600.0,
       progress=lambda m: None, wait_s: float = 15.0, auth: Optional[str] = None) -> LocalStatus:
    """Start the controller (a daemon unless foreground); idempotent when already running.

    port None: DEFAULT_PORT, or wherever this state folder's controller already runs.
    auth: "guest" (OpenWhisk's well-known key), "generate" (a new private key in
    HOME/wskprops), or None (keep the key this folder has; the guest key at first)."""
    if auth is not None and auth not in AUTH_MODES:
        raise TargetError(f"--auth {auth!r} is not a key mode; use one of: {', '.join(AUTH_MODES)}.")
    st = current_status()
    _check_port(st, port, "stop it first with 'mlfn local down', or set MLFN_LOCAL_HOME to another folder to run "
                          "a second one.")
    if st.running:
        if auth == "generate" or (auth == "guest" and st.key != "guest"):
            raise TargetError(f"The local controller already runs with the {st.key} key; stop it with "
                              f"'mlfn local down' first to change its key.")
        st.message = f"already running on {st.apihost} (pid {st.pid})"
        return st
    port = port or DEFAULT_PORT
    home = state_dir()
    home.mkdir(parents=True, exist_ok=True)
    _check_docker()
    if ping(f"http://127.0.0.1:{port}", timeout=0.5):
        raise TargetError(f"Port {port} on 127.0.0.1 is already in use by another server; pass --port N.")
    write_wskprops(new_key(auth) if auth else local_key(home), f"http://127.0.0.1:{port}", home)
    cmd = [sys.executable, "-m", "mlfn.targets.local.api", "--port", str(port), "--home", str(home),
           "--idle-seconds", str(idle_seconds)]
    if foreground:
        from mlfn.targets.local.api import main as serve

        _write_runfile(os.getpid(), port)
        try:
            return_code = serve(cmd[3:])
        finally:
            _runfile().unlink(missing_ok=True)
        return LocalStatus(running=False, apihost=f"http://127.0.0.1:{port}", state_dir=str(home),
                           message=f"stopped (exit code {return_code})")
    log_file = home / "server.log"
    with open(log_file, "ab") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, start_new_session=True)
    _write_runfile(proc.pid, port)
    progress(f"Starting the local OpenWhisk API on http://127.0.0.1:{port} (pid {proc.pid})")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            raise TargetError(f"The local controller exited at start-up: {tail[0]} (see {log_file}).")
        if ping(f"http://127.0.0.1:{port}", timeout=0.5):
            st = current_status()
            st.message = f"started on {st.apihost} (pid {proc.pid})"
            return st
        time.sleep(0.1)
    raise TargetError(f"The local controller did not answer on port {port} within {wait_s:.0f}s; see {log_file}.")


def down(wait_s: float = 20.0, port: Optional[int] = None) -> LocalStatus:
    _check_port(current_status(), port, "drop --port to stop it, or set MLFN_LOCAL_HOME to the folder of the controller "
                                 "on that port.")
    info = read_runfile()
    pid = (info or {}).get("pid")
    if not pid or not pid_alive(pid):
        _runfile().unlink(missing_ok=True)
        return LocalStatus(running=False, apihost=local_apihost(), state_dir=str(state_dir()),
                           message="not running")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and pid_alive(pid):
        try:  # reap it if it is our child (foreground tests)
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if pid_alive(pid):
        raise TargetError(f"The local controller (pid {pid}) did not stop within {wait_s:.0f}s.")
    _runfile().unlink(missing_ok=True)
    return LocalStatus(running=False, apihost=f"http://127.0.0.1:{info.get('port')}", state_dir=str(state_dir()),
                       message=f"stopped (pid {pid}); its action containers were removed")


def _write_runfile(pid: int, port: int) -> None:
    _runfile().write_text(json.dumps({"pid": pid, "port": port}))


def _check_docker() -> None:
    try:
        import docker

        docker.from_env().ping()
    except Exception:  # noqa: BLE001
        raise TargetError("Docker is not reachable; the local target runs actions as containers, so start "
                          "Docker (dockerd) first.") from None
