"""`serving.batching` in mlfn.yaml: defaults, validation naming the key, what function.json
carries to the image (nothing at the defaults: content hashes stay), what the runtime reads
from it, and `mlfn init`'s commented file."""
from __future__ import annotations

import json

import pytest

from mlfn.config import from_dict, load_config
from mlfn.errors import ConfigError
from mlfn.image.stage import function_document
from mlfn.project import render_config


def test_defaults_leave_function_json_as_it_was():
    cfg = from_dict({"name": "digits"})
    assert cfg.serving.batching.enabled is True and cfg.serving.batching.max_latency_ms == 2.0
    assert "batching" not in function_document(cfg, [])["serving"]
    off = function_document(from_dict({"name": "digits", "serving": {"batching": {"enabled": False}}}), [])
    assert off["serving"]["batching"]["enabled"] is False  # switched off, it is written out


def test_function_json_without_batching_means_the_build_side_default():
    from mlfn.config import BatchingConfig
    from mlfn_runtime.batching import BatchSettings
    from mlfn_runtime.serving import Serving

    runtime = Serving.from_dict({}, environ={}).batching
    assert (runtime.enabled, runtime.max_batch_size, runtime.max_latency_ms) == (
        BatchingConfig().enabled, BatchingConfig().max_batch_size, BatchingConfig().max_latency_ms)
    assert runtime == BatchSettings()


def test_the_runtime_reads_what_the_build_side_writes(tmp_path):
    from mlfn_runtime.batching import BatchSettings
    from mlfn_runtime.serving import Serving

    cfg = from_dict({"name": "digits", "serving": {"batching": {"enabled": True, "max_batch_size": 16,
                                                               "max_latency_ms": 5}}})
    doc = function_document(cfg, [])
    assert doc["serving"]["batching"] == {"enabled": True, "max_batch_size": 16, "max_latency_ms": 5.0}
    (tmp_path / "function.json").write_text(json.dumps(doc))
    serving = Serving.from_dict(json.loads((tmp_path / "function.json").read_text())["serving"], environ={})
    assert serving.batching == BatchSettings(enabled=True, max_batch_size=16, max_latency_ms=5.0)
    assert serving.max_batch_size == 32  # inputs per request: a different key, untouched


@pytest.mark.parametrize("data,needle", [
    ({"max_batch_size": 0}, "serving.batching.max_batch_size in mlfn.yaml is 0"),
    ({"max_latency_ms": -1}, "serving.batching.max_latency_ms in mlfn.yaml is -1"),
    ({"max_latency_ms": 2000}, "serving.batching.max_latency_ms in mlfn.yaml is 2000"),
    ({"enabled": "yes"}, "'serving.batching.enabled' in mlfn.yaml must be bool"),
    ({"max_rows": 8}, "Unknown key 'serving.batching.max_rows'"),
])
def test_bad_values_name_the_key(data, needle):
    with pytest.raises(ConfigError) as e:
        from_dict({"name": "digits", "serving": {"batching": data}})
    assert needle in str(e.value)


def test_environment_overrides_name_the_variable(tmp_path, monkeypatch):
    (tmp_path / "mlfn.yaml").write_text("name: digits\n")
    monkeypatch.setenv("MLFN_SERVING__BATCHING__ENABLED", "false")
    assert load_config(str(tmp_path)).serving.batching.enabled is False
    monkeypatch.setenv("MLFN_SERVING__BATCHING__MAX_LATENCY_MS", "5000")
    with pytest.raises(ConfigError, match="MLFN_SERVING__BATCHING__MAX_LATENCY_MS"):
        load_config(str(tmp_path))


def test_mlfn_init_documents_the_keys():
    text = render_config(from_dict({}))
    section = text[text.index("  batching:"):]
    for key in ("enabled: true", "max_batch_size: 32", "max_latency_ms: 2.0"):
        assert f"    {key}  # " in section
    assert "inputs one request may carry" in text  # serving.max_batch_size says how it differs
