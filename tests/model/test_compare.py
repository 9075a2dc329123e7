"""`mlfn quantize --compare`: every mode, one table, report.json and a PNG chart."""
from __future__ import annotations

import json

from click.testing import CliRunner

from mlfn.cli import main
from mlfn.model.compare import compare_modes
from tests.model.helpers import project

MODES = ["none", "dynamic", "float16", "int8", "int8-selective", "int16x8"]


def test_compare_json_report_and_chart(digits_project, tmp_path):
    cfg = project(tmp_path / "p", digits_project, mode="int8", max_accuracy_drop=2.0)
    res = CliRunner().invoke(main, ["quantize", "-c", cfg.source, "--compare", "--report-dir",
                                    tmp_path / "rep", "-o", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [m["mode"] for m in data["modes"]] == MODES
    for m in data["modes"]:
        assert m["size_bytes"] > 0 and 90.0 < m["accuracy"] <= 100.0 and m["latency_ms_p50"] > 0
        assert m["gate"] is True
    sizes = {m["mode"]: m["size_bytes"] for m in data["modes"]}
    assert sizes["int8"] <= 0.30 * sizes["none"] and sizes["float16"] < sizes["none"]
    assert data["original"]["accuracy"] > 90.0 and data["original"]["size_bytes"] > sizes["none"]
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report == data
    png = (tmp_path / "rep" / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_compare_text_table(digits_project, tmp_path):
    cfg = project(tmp_path / "p", digits_project)
    res = CliRunner().invoke(main, ["quantize", "-c", cfg.source, "--compare"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    header = next(ln for ln in lines if ln.startswith("mode"))
    for col in ("size", "Δsize", "accuracy", "Δaccuracy", "latency p50"):
        assert col in header
    rows = [ln.split()[0] for ln in lines[lines.index(header) + 1:] if ln.split() and ln.split()[0] in MODES]
    assert rows == MODES
    assert (tmp_path / "p" / ".mlfn" / "report" / "report.json").is_file()


def test_compare_skips_calibrated_modes_without_data(digits_project, tmp_path):
    cfg = project(tmp_path / "p", digits_project, mode="dynamic", representative_data=None)
    rep = compare_modes(cfg, chart=False)
    assert [m["mode"] for m in rep.modes] == ["none", "dynamic", "float16"]
    assert set(rep.skipped) == {"int8", "int16x8", "int8-selective"} and rep.chart_path is None
