"""`python3 -m mlfn_runtime` as the platforms run it (issue 11, item 5): SIGTERM drains
within serving.drain_seconds even when a straggler never finishes its request; and a
keep-alive connection of a container that was frozen (OpenWhisk pauses idle containers)
is not closed as idle the moment it thaws."""
import contextlib
import signal
import socket
import subprocess
import sys
import time

import requests

from .test_connections import HEALTH, read_response


@contextlib.contextmanager
def runtime_process(function_dir, **settings):
    """The runtime in its own process on a free port, with MLFN_SERVING_<KEY> settings."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PORT": str(port), "MLFN_FUNCTION_DIR": str(function_dir), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": ":".join(sys.path), **{"MLFN_SERVING_" + k.upper(): str(v) for k, v in settings.items()}}
    proc = subprocess.Popen([sys.executable, "-m", "mlfn_runtime", "--host", "127.0.0.1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < end, "the runtime did not get ready"
            time.sleep(0.05)
        yield proc, url, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_sigterm_with_a_straggler_exits_within_the_drain_deadline(digits_dir):
    with runtime_process(digits_dir, drain_seconds=1, body_timeout_seconds=60) as (proc, url, port):
        straggler = socket.create_connection(("127.0.0.1", port), timeout=10)
        straggler.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"ima")
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        idle.sendall(HEALTH)
        assert read_response(idle).startswith(b"HTTP/1.1 200")
        time.sleep(0.2)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        took = time.monotonic() - t0
        err = proc.stderr.read()
        assert 0.9 < took < 3.5, err[-2000:]  # waited for the straggler, but only drain_seconds
        assert "1 connection(s) cut off at the deadline" in err and "at most 1 s, serving.drain_seconds" in err
        for s in (straggler, idle):
            try:
                assert s.recv(65536) == b""
            except ConnectionResetError:
                pass


def test_a_keep_alive_connection_survives_a_freeze_longer_than_the_idle_deadline(digits_dir):
    with runtime_process(digits_dir, idle_timeout_seconds=0.5) as (proc, url, port):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(HEALTH)
        assert read_response(s).startswith(b"HTTP/1.1 200")
        proc.send_signal(signal.SIGSTOP)  # as `docker pause` freezes an idle OpenWhisk container
        time.sleep(3.5)
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.2)
        s.sendall(HEALTH)  # the invoker's next activation, soon after unpausing
        assert read_response(s).startswith(b"HTTP/1.1 200")
        s.settimeout(5)
        t0 = time.monotonic()
        assert s.recv(65536) == b""  # then idle again: closed after the idle deadline
        assert time.monotonic() - t0 < 2.5
