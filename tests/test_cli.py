"""The command line: help without TensorFlow, init, and error handling."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml
from click.testing import CliRunner

from mlfn.cli import COMMANDS, main
from mlfn.config import Config, from_dict, to_dict

BLOCK_TF = textwrap.dedent(
    """
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'):
                raise ImportError('tensorflow is blocked in this test')
    sys.meta_path.insert(0, Block())
    from mlfn.cli import main
    args = sys.argv[1:]
    try:
        main(args, standalone_mode=False)
    except SystemExit as e:
        assert not e.code, e.code
    assert not [m for m in sys.modules if m.startswith('tensorflow')]
    """
)


def _help_commands():
    cmds = [[]]
    for name in COMMANDS:
        cmd = main.get_command(None, name)
        if cmd is None:
            continue
        cmds.append([name])
        for sub in getattr(cmd, "commands", {}):
            cmds.append([name, sub])
    return cmds


@pytest.mark.parametrize("args", _help_commands(), ids=lambda a: " ".join(a) or "mlfn")
def test_help_works_without_tensorflow(args):
    r = subprocess.run([sys.executable, "-c", BLOCK_TF, *args, "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "Usage:" in r.stdout


def test_every_registered_command_exists():
    missing = [n for n in COMMANDS if main.get_command(None, n) is None]
    assert not missing, f"commands registered but not implemented: {missing}"


def test_init_writes_every_key_at_default(tmp_path):
    model = tmp_path / "net.tflite"
    model.write_bytes(b"TFL3")
    r = CliRunner().invoke(main, ["init", str(model), "--out", str(tmp_path), "--output", "json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    text = (tmp_path / "mlfn.yaml").read_text()
    data = yaml.safe_load(text)
    cfg = from_dict(data)
    default = to_dict(Config())
    written = to_dict(cfg)
    assert info["name"] == "net" and written["model"]["path"] == "net.tflite"
    for section in ("quantize", "build", "serving", "deploy"):
        assert written[section] == default[section]
    # every key is in the file and commented where the schema says what it means
    assert "max_accuracy_drop: null  #" in text and "interpreter: per-thread  #" in text
    r2 = CliRunner().invoke(main, ["init", str(model), "--out", str(tmp_path)])
    assert r2.exit_code != 0 and "already exists" in r2.output


def test_init_rejects_non_models(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    r = CliRunner().invoke(main, ["init", str(tmp_path / "notes.txt"), "--out", str(tmp_path)])
    assert r.exit_code != 0 and "not a SavedModel folder" in r.output
    r = CliRunner().invoke(main, ["init", str(tmp_path / "absent.keras"), "--out", str(tmp_path)])
    assert r.exit_code != 0 and "does not exist" in r.output


def test_errors_are_one_sentence_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mlfn.cli", "run", "-c", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "No mlfn.yaml" in r.stderr


def test_invoke_bad_json_and_missing_files(tmp_path):
    r = CliRunner().invoke(main, ["invoke", "http://127.0.0.1:9", "--json", "{broken"])
    assert r.exit_code != 0 and "not valid JSON" in r.output
    r = CliRunner().invoke(main, ["invoke", "http://127.0.0.1:9", "--image", str(tmp_path / "no.png")])
    assert r.exit_code != 0 and "does not exist" in r.output
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    r = CliRunner().invoke(main, ["invoke", "http://127.0.0.1:9", "--image", str(tmp_path / "a.png")])
    assert r.exit_code != 0 and "Cannot connect" in r.output


@pytest.mark.slow
def test_help_in_a_virtualenv_without_tensorflow(tmp_path):
    """The acceptance check as a user would run it: a fresh venv with mlfn's base
    requirements only (no [convert] extra), and every --help."""
    from tests.conftest import ROOT

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["--no-deps", "-e", str(ROOT)], check=True, capture_output=True)
    subprocess.run(pip + ["click", "jinja2", "pyyaml", "requests", "docker"], check=True, capture_output=True)
    py = str(venv / "bin" / "python")
    r = subprocess.run([py, "-c", "import tensorflow"], capture_output=True)
    assert r.returncode != 0, "tensorflow must not be importable in this venv"
    mlfn = str(venv / "bin" / "mlfn")
    for args in _help_commands():
        r = subprocess.run([mlfn, *args, "--help"], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": ""})
        assert r.returncode == 0, (args, r.stderr[-500:])
        assert "Usage:" in r.stdout


@pytest.mark.parametrize("args", [a for a in _help_commands() if a], ids=" ".join)
def test_every_help_teaches_with_an_example(args):
    r = CliRunner().invoke(main, [*args, "--help"])
    assert r.exit_code == 0, r.output
    assert "Example" in r.output and f"mlfn {' '.join(args)}" in r.output.split("Example", 1)[1], r.output


def test_commands_import_no_private_names_of_other_modules():
    """Shared options and helpers live in mlfn.commands.options; a command module never
    reaches into another one's private names."""
    import ast
    from pathlib import Path

    import mlfn.commands

    offenders = []
    for path in sorted(Path(mlfn.commands.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlfn."):
                offenders += [f"{path.name}: from {node.module} import {a.name}"
                              for a in node.names if a.name.startswith("_")]
    assert not offenders, offenders


def test_debug_reaches_the_error_handler_through_the_typed_context(tmp_path):
    from mlfn.commands.options import CliContext
    from mlfn.errors import ConfigError

    r = CliRunner().invoke(main, ["--debug", "deploy", "-c", str(tmp_path / "nope")])
    assert isinstance(r.exception, ConfigError)  # raised with its traceback, not turned into a sentence
    r = CliRunner().invoke(main, ["deploy", "-c", str(tmp_path / "nope")])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit)
    ctx = main.make_context("mlfn", ["--debug", "versions", "digits", "-o", "json"])
    assert isinstance(ctx.obj, CliContext) and ctx.obj.output == "json"
