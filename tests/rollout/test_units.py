"""Settings parsing, the mlfn.yaml `rollout:` section, the quality judgement, the state
codecs (OpenWhisk annotations, Knative Service annotation) and the CLI's usage errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mlfn.errors import ConfigError
from mlfn.rollout.metrics import Window, percentile
from mlfn.rollout.quality import Probe, judge, load_probe
from mlfn.rollout.settings import RolloutSettings, parse_duration, parse_percent, parse_steps, resolve
from mlfn.rollout.state import RolloutState, active, with_state
from mlfn.targets.interface import Alias, AliasRecord


def test_parsers():
    assert parse_duration("60s", "--interval") == 60 and parse_duration("10m", "x") == 600
    assert parse_duration("250ms", "x") == 0.25 and parse_duration(2, "x") == 2.0
    assert parse_percent("1%", "x") == 1.0 and parse_percent("0.5", "x") == 0.5
    assert parse_steps("10,25,50,100") == [10, 25, 50, 100] and parse_steps("10,50") == [10, 50, 100]
    with pytest.raises(ConfigError, match="--interval 'soon' is not a duration"):
        parse_duration("soon", "--interval")
    with pytest.raises(ConfigError, match="must rise strictly"):
        parse_steps("50,10")
    with pytest.raises(ConfigError, match="between 0% and 100%"):
        parse_percent("150%", "--max-error-rate")


def test_flags_win_over_the_config_section(tmp_path):
    from mlfn.config import load_config

    (tmp_path / "mlfn.yaml").write_text("name: digits\nrollout:\n  steps: '20,100'\n  interval: 30s\n"
                                        "  max_p99: 250ms\n  probe: probe.npz\n")
    cfg = load_config(str(tmp_path))
    from mlfn.rollout.api import settings_for

    s = settings_for(cfg, {"interval": "5s", "max_error_rate": "2%"})
    assert (s.steps, s.interval, s.max_p99_ms, s.max_error_rate) == ([20, 100], 5.0, 250.0, 2.0)
    assert s.probe == str(tmp_path / "probe.npz")  # relative to the project folder
    (tmp_path / "mlfn.yaml").write_text("name: digits\nrollout:\n  speed: 3\n")
    with pytest.raises(ConfigError, match="Unknown key 'rollout.speed'"):
        load_config(str(tmp_path))


def test_settings_roundtrip_and_checks():
    s = resolve(None, {"steps": "10,100", "max_p99": "1s", "min_agreement": "98%"})
    assert RolloutSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert s.max_p99_ms == 1000 and s.min_agreement == 98.0
    with pytest.raises(ConfigError, match="--failures must be at least 1"):
        resolve(None, {"failures": 0})


def test_window_and_percentile():
    assert percentile([5, 1, 3, 2, 4], 99) == 5 and percentile([], 99) is None
    assert percentile(list(range(1, 101)), 99) == 99
    w = Window(40, 12, 80.0)
    assert w.error_rate == 30.0 and Window(0, 0, None).error_rate == 0.0


def test_quality_judgement():
    def top1(*indices):
        return [("digit " + str(i), i) for i in indices]

    labelled = Probe([], labels=[0, 1, 2, 3])
    assert judge(labelled, top1(0, 1, 2, 0), top1(0, 1, 2, 3), 1.0, None).values == {"accuracy": 75.0,
                                                                                   "stable_accuracy": 100.0}
    assert not judge(labelled, top1(0, 1, 2, 0), top1(0, 1, 2, 3), 1.0, None).passed
    assert judge(labelled, top1(0, 1, 2, 0), top1(0, 1, 2, 3), 30.0, None).passed
    named = Probe([], labels=["digit 1", "digit 2"])  # an image folder's label names
    assert judge(named, top1(1, 1), top1(1, 2), 1.0, None).values["accuracy"] == 50.0
    unlabelled = Probe([])
    r = judge(unlabelled, top1(1, 2, 3, 4), top1(1, 2, 3, 5), 1.0, 98.0)
    assert not r.passed and r.values["agreement"] == 75.0
    regression = Probe([], labels=[1.0, 2.0], task="regression")
    r = judge(regression, [1.5, 2.5], [1.0, 2.0], 0.1, None)
    assert not r.passed and r.values == {"mse": 0.25, "stable_mse": 0.0}


def test_probe_files(tmp_path):
    np.savez(tmp_path / "p.npz", x=np.zeros((40, 3)), y=np.eye(3)[np.arange(40) % 3])
    p = load_probe(str(tmp_path / "p.npz"))
    assert len(p.payloads) == 2 and p.labels[:4] == [0, 1, 2, 0] and p.task == "classification"
    np.savez(tmp_path / "r.npz", x=np.zeros((2, 3)), y=np.array([0.5, 1.25]))
    assert load_probe(str(tmp_path / "r.npz")).task == "regression"
    (tmp_path / "imgs" / "7").mkdir(parents=True)
    (tmp_path / "imgs" / "7" / "a.png").write_bytes(b"\x89PNG")
    assert load_probe(str(tmp_path / "imgs")).labels == ["7"]
    np.savez(tmp_path / "bad.npz", y=np.zeros(3))
    with pytest.raises(ConfigError, match="has no array 'x'"):
        load_probe(str(tmp_path / "bad.npz"))


def test_state_kept_with_the_alias_by_both_codecs():
    from mlfn.targets.knative import codec as kn
    from mlfn.targets.openwhisk import codec as ow

    run = RolloutState.new("digits", "default", "v2", "v1", RolloutSettings())
    alias = Alias("default", {"v1": 100}, rollouts=with_state(None, run))
    assert active(alias).id == run.id
    record = AliasRecord("default", {"v1": 90, "v2": 10}, rollouts=alias.rollouts)
    body = ow.alias_body("digits", "_", record, {"v1": {"exec": {"image": "i"}}, "v2": {"exec": {"image": "i"}}},
                         None, "code")
    assert ow.alias_from(body, "u", "w").rollouts == alias.rollouts
    obj = {"metadata": {"name": "digits", "annotations": {}}}
    kn.write_rollouts(obj, {"default": alias.rollouts})
    assert kn.read_rollouts(obj) == {"default": alias.rollouts}
    run.finish("promoted", "done")
    assert active(Alias("default", {}, rollouts=with_state(alias, run))) is None


def test_cli_usage_errors(tmp_path):
    from mlfn.cli import main

    r = CliRunner().invoke(main, ["rollout", "digits", "v2", "--steps", "50,10", "--target", "openwhisk",
                                  "--apihost", "http://127.0.0.1:9", "--auth", "a:b"])
    assert r.exit_code == 2 and "--steps '50,10' must rise strictly" in r.output
    r = CliRunner().invoke(main, ["rollout", "--help"])
    assert "4  rolled back" in r.output and "6  inconclusive" in r.output
