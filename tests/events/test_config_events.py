"""`serving.events` and `logging` in mlfn.yaml: defaults, validation naming the key, and
what function.json carries to the image (nothing when unset: content hashes stay)."""
from __future__ import annotations

import pytest

from mlfn.config import from_dict
from mlfn.errors import ConfigError
from mlfn.image.stage import function_document


def test_defaults_leave_function_json_as_it_was():
    doc = function_document(from_dict({"name": "digits"}), [])
    assert "events" not in doc["serving"] and "logging" not in doc


def test_events_and_logging_travel_in_function_json():
    cfg = from_dict({"name": "digits", "serving": {"events": {"reply": False}},
                     "logging": {"sink": "http://sink.example:8080/log", "sample_rate": 0.25, "payload": "metadata"}})
    doc = function_document(cfg, [])
    assert doc["serving"]["events"] == {"reply": False}
    assert doc["logging"] == {"sink": "http://sink.example:8080/log", "sample_rate": 0.25, "payload": "metadata"}


def test_the_runtime_reads_what_the_build_side_writes(tmp_path):
    import json

    from mlfn_runtime.event_settings import read_settings

    cfg = from_dict({"name": "digits", "serving": {"events": {"reply": False}},
                     "logging": {"sink": "https://sink.example/log", "sample_rate": 0.5}})
    (tmp_path / "function.json").write_text(json.dumps(function_document(cfg, [])))
    events, logging = read_settings(str(tmp_path), environ={})
    assert events.reply is False and logging.sink == "https://sink.example/log" and logging.sample_rate == 0.5
    events, logging = read_settings(str(tmp_path), environ={"MLFN_EVENTS_REPLY": "true", "MLFN_LOGGING_SINK": "http://o"})
    assert events.reply is True and logging.sink == "http://o"


@pytest.mark.parametrize("data,needle", [
    ({"logging": {"sink": "sink.example"}}, "logging.sink"),
    ({"logging": {"sample_rate": 1.5}}, "logging.sample_rate"),
    ({"logging": {"payload": "all"}}, "logging.payload"),
    ({"logging": {"sinks": "http://x"}}, "logging.sinks"),
    ({"serving": {"events": {"reply": "no"}}}, "serving.events.reply"),
])
def test_bad_values_name_the_key(data, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        from_dict({"name": "digits", **data})


@pytest.mark.parametrize("env,version", [
    ({"MLFN_VERSION": "v4", "K_REVISION": "digits-v2", "K_SERVICE": "digits"}, "v4"),
    ({"K_REVISION": "digits-v2", "K_SERVICE": "digits"}, "v2"),
    ({"K_REVISION": "other-00001", "K_SERVICE": "digits"}, "other-00001"),
    ({}, "unversioned"),
])
def test_the_version_in_event_sources(monkeypatch, env, version):
    from mlfn_runtime.event_settings import function_version

    for key in ("MLFN_VERSION", "K_REVISION", "K_SERVICE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert function_version() == version


def test_connection_and_openwhisk_settings_of_mlfn_yaml_reach_the_runtime():
    """serving.drain_seconds & co. in mlfn.yaml travel in function.json to the runtime's
    Serving; left at their defaults, they are not written (the content hash stays)."""
    from mlfn_runtime.serving import Serving

    cfg = from_dict({"name": "digits", "serving": {"drain_seconds": 5, "max_connections": 64, "openwhisk": False}})
    doc = function_document(cfg, [])
    serving = Serving.from_dict(doc["serving"], environ={})
    assert (serving.drain_seconds, serving.max_connections, serving.openwhisk) == (5, 64, False)
    plain = function_document(from_dict({"name": "digits"}), [])["serving"]
    assert "drain_seconds" not in plain and "openwhisk" not in plain
