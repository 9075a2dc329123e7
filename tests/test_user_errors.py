"""Mistakes a user makes on the command line: each ends in one sentence that names what
and where, a non-zero exit and no traceback; stdout holds nothing, or with `-o json` one
JSON error document (so `-o json` stays parseable)."""
import json
import socket
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from mlfn.cli import main


_PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010800000000"
                     "3a7e9b550000000a49444154789c63600000000200015d2b8e820000000049454e44ae426082")


def _cli(args):
    r = CliRunner().invoke(main, args)
    r.json_output = any(a == "json" and b in ("-o", "--output") for b, a in zip(args, args[1:]))
    return r


def _one_sentence(r, code):
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    if r.json_output:
        error = json.loads(r.stdout)["error"]
        assert error["exit_code"] == code and f"Error: {error['message']}" in r.stderr, (r.stdout, r.stderr)
    else:
        assert r.stdout == ""
    return r.stderr


@pytest.mark.parametrize("args, code, kind, message", [
    (["deploy", "-c", "{tmp}/nope"], 2, "ConfigError", "No mlfn.yaml at {tmp}/nope"),
    (["quantize", "-c", "{tmp}/nope"], 2, "ConfigError", "No mlfn.yaml at {tmp}/nope"),
    (["init", "{tmp}/absent.keras", "--out", "{tmp}"], 1, "ModelError", "{tmp}/absent.keras does not exist"),
    (["invoke", "http://127.0.0.1:9", "--json", "{{broken"], 1, None, "not valid JSON"),
    (["run", "-e", "FOO"], 2, "BadParameter", "'FOO' is not KEY=VALUE"),
    (["traffic", "digits", "v1=x"], 2, "BadParameter", "'v1=x' is not vN=WEIGHT"),  # fails before -o is read
    (["rollback", "digits", "--bogus"], 2, "NoSuchOption", "No such option '--bogus'"),
])
def test_a_failure_with_output_json_is_one_json_error_document_on_stdout(tmp_path, args, code, kind, message):
    args = [a.format(tmp=tmp_path) for a in args]
    r = CliRunner().invoke(main, [*args, "-o", "json"])
    assert r.exit_code == code, r.output
    error = json.loads(r.stdout)["error"]  # one document, nothing else on stdout
    assert set(error) == {"message", "type", "exit_code"} and error["exit_code"] == code
    assert message.format(tmp=tmp_path) in error["message"]
    assert kind is None or error["type"] == kind
    assert error["message"] in r.stderr  # the sentence is still on stderr for people
    r = CliRunner().invoke(main, args)
    assert r.exit_code == code and r.stdout == ""  # text output: stderr only


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("value", ["FOO", "=x"])
def test_run_env_without_key_value(value):
    err = _one_sentence(_cli(["run", "-e", value, "-o", "json"]), 2)
    assert f"'{value}' is not KEY=VALUE" in err and "--env" in err


@pytest.mark.parametrize("command", [["deploy"], ["render"], ["status", "digits"], ["versions", "digits"],
                                     ["rollback", "digits"]])
def test_a_config_path_that_names_nothing_is_an_error_naming_it(tmp_path, command):
    missing = tmp_path / "nope"
    err = _one_sentence(_cli([*command, "-c", str(missing), "-o", "json"]), 2)
    assert f"No mlfn.yaml at {missing}" in err


def test_deploy_without_mlfn_yaml_names_the_file_it_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _one_sentence(_cli(["deploy", "-o", "json"]), 2)
    assert f"No mlfn.yaml at {tmp_path / 'mlfn.yaml'}" in err or "No mlfn.yaml at mlfn.yaml" in err


def test_invoke_a_deployed_function_when_the_local_controller_is_down(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFN_LOCAL_HOME", str(tmp_path / "local"))
    png = tmp_path / "x.png"
    png.write_bytes(_PNG)  # a real image: the client refuses non-images before sending
    port = _free_port()
    err = _one_sentence(_cli(["invoke", "digits", "--port", str(port), "--image", str(png), "-o", "json"]), 1)
    assert f"The local OpenWhisk API at http://127.0.0.1:{port} is not running; start it with 'mlfn local up'." in err


def test_dry_run_with_nothing_to_send_says_so():
    from mlfn.commands.deploy import _dry

    assert _dry(SimpleNamespace(requests=[])) == \
        "Dry run: nothing was changed, and nothing would be (no requests to send)."
    text = _dry(SimpleNamespace(requests=[{"method": "PUT", "url": "https://x/api", "body": {"a": 1}}]))
    assert "would be sent" in text and "PUT https://x/api" in text


@pytest.mark.docker
def test_run_an_image_that_is_not_a_function(base_image, docker_client_or_skip, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no mlfn.yaml: the container is named after the image
    err = _one_sentence(_cli(["run", "--image", base_image, "-o", "json"]), 1)
    assert f"The container from {base_image} exited with code 0 before it answered on port 8080" in err
    assert "function image made by 'mlfn build'" in err
    assert not docker_client_or_skip.containers.list(all=True, filters={"name": "mlfn-mlfn-base"})


@pytest.fixture
def docker_client_or_skip():
    import docker

    return docker.from_env()


def test_invoke_repeat_and_timeout_are_checked(tmp_path):
    png = tmp_path / "x.png"
    png.write_bytes(_PNG)  # a real image: the client refuses non-images before sending
    err = _one_sentence(_cli(["invoke", "http://127.0.0.1:9", "--repeat", "5", "--image", str(png)]), 2)
    assert "--repeat counts which version served a deployed function" in err and "http://127.0.0.1:9" in err
    err = _one_sentence(_cli(["invoke", "http://127.0.0.1:9", "--timeout", "0", "--image", str(png)]), 2)
    assert "'--timeout'" in err


def test_a_weight_that_nothing_else_could_take_is_explained():
    from mlfn.aliases import split_for
    from mlfn.errors import MlfnError

    with pytest.raises(MlfnError) as e:  # deploy --weight 20 of unchanged content: v1 is the new version
        split_for(current={"v1": 100}, new="v1", weight=20)
    assert str(e.value).startswith("The alias already routes only to v1, so no other version would take the "
                                   "remaining 80%;")
    with pytest.raises(MlfnError) as e:
        split_for(current=None, new="v1", weight=20)
    assert "Nothing else routes the remaining 80%; deploy without --weight" in str(e.value)


@pytest.mark.parametrize("command", [["status", "digits"], ["traffic", "digits", "v1=100"],
                                     ["invoke", "digits", "--json", "{}"]])
def test_without_port_the_local_target_is_the_controller_of_mlfn_local_home(tmp_path, monkeypatch, command):
    """Not whatever else listens on 3233 (another MLFN_LOCAL_HOME's controller, a wsk standalone)."""
    monkeypatch.setenv("MLFN_LOCAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFN_LOCAL_APIHOST", raising=False)
    err = _one_sentence(_cli([*command, "-o", "json"]), 1)
    assert f"The local OpenWhisk API of {tmp_path / 'home'} is not running; start it with 'mlfn local up'" in err
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "server.json").write_text('{"pid": 999999999, "port": 3233}')  # a stale run file
    err = _one_sentence(_cli([*command, "-o", "json"]), 1)
    assert "is not running; start it with 'mlfn local up'" in err


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_run_no_docker_on_a_busy_port(tmp_path, monkeypatch, busy_port):
    (tmp_path / "mlfn.yaml").write_text("name: fn\nmodel:\n  path: model.tflite\n")
    monkeypatch.chdir(tmp_path)
    err = _one_sentence(_cli(["run", "--no-docker", "--port", str(busy_port)]), 1)
    assert f"Port {busy_port} on 127.0.0.1 is not free" in err and "pass another --port" in err


@pytest.mark.docker
def test_run_on_a_busy_port_leaves_no_container(base_image, docker_client_or_skip, tmp_path, monkeypatch, busy_port):
    monkeypatch.chdir(tmp_path)
    err = _one_sentence(_cli(["run", "--image", base_image, "--port", str(busy_port), "-o", "json"]), 1)
    assert f"Port {busy_port} on 127.0.0.1 is not free" in err
    assert not docker_client_or_skip.containers.list(all=True, filters={"name": "mlfn-mlfn-base"})


@pytest.mark.parametrize("protocol", ["predict", "openwhisk", "v2", "v1"])
def test_invoke_a_url_that_is_not_one(tmp_path, protocol):
    png = tmp_path / "x.png"
    png.write_bytes(_PNG)  # a real image: the client refuses non-images before sending
    err = _one_sentence(_cli(["invoke", "http://[bad", "--protocol", protocol, "--image", str(png)]), 1)
    assert err.strip() == "Error: http://[bad is not a valid URL; use http://HOST:PORT as printed by 'mlfn run'."


def test_invoke_a_folder_as_an_image(tmp_path):
    err = _one_sentence(_cli(["invoke", "http://127.0.0.1:9", "--image", str(tmp_path)]), 1)
    assert f"--image {tmp_path} is a folder; give an image file" in err


def test_an_interrupted_command_with_output_json_says_so_on_stdout(monkeypatch):
    import mlfn.config

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(mlfn.config, "load_config", interrupted)
    r = CliRunner().invoke(main, ["deploy", "-o", "json"])
    assert r.exit_code == 130 and r.stderr == "Interrupted.\n"
    assert json.loads(r.stdout) == {"error": {"message": "Interrupted.", "type": "Interrupted", "exit_code": 130}}
