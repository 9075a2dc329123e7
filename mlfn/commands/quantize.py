"""`mlfn quantize`: convert the model in mlfn.yaml to a small .tflite and report on it."""
from __future__ import annotations

import click

from mlfn.commands.options import config_option, output_option

MODES = ["none", "dynamic", "float16", "int8", "int8-selective", "int16x8", "auto"]  # mlfn.config.QUANTIZE_MODES


@click.command()
@config_option
@click.option("--mode", "-m", type=click.Choice(MODES), default=None,
              help="Quantization mode (default: quantize.mode in mlfn.yaml).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="Where to write the .tflite (default: model.tflite next to mlfn.yaml).")
@click.option("--model", "model_name", default=None, metavar="NAME",
              help="Convert one of the extra models listed under 'models:' instead of the main one.")
@click.option("--target", type=click.Choice(["litert", "tflite-runtime"]), default=None,
              help="Interpreter the op versions must suit (tflite-runtime = the legacy 2.14 one).")
@click.option("--allow-select-tf-ops", is_flag=True, default=None,
              help="Keep ops TFLite lacks as TensorFlow (Flex) ops; the image then needs full TensorFlow.")
@click.option("--per-tensor", is_flag=True, default=None,
              help="One scale per weight tensor instead of per channel: a smaller file, maybe less accurate.")
@click.option("--max-accuracy-drop", type=float, default=None, metavar="POINTS",
              help="Fail when top-1 accuracy drops by more than this many points.")
@click.option("--compare", is_flag=True,
              help="Convert every mode; print a table, write report.json and a chart (see --report-dir).")
@click.option("--report-dir", type=click.Path(file_okay=False), default=None,
              help="Folder for --compare's report.json and chart (default: .mlfn/report next to mlfn.yaml).")
@click.option("--no-cache", is_flag=True, help="Convert again even when the cache holds this conversion.")
@output_option
def quantize(config_path, mode, out_path, model_name, target, allow_select_tf_ops, per_tensor, max_accuracy_drop,
             compare, report_dir, no_cache, output):
    """Convert the model to TFLite, quantize it, and report size, ops, accuracy and latency.

    Reads model, quantize and pipeline settings from mlfn.yaml. With validation data
    (quantize.validation_data) it measures the original and converted model on the same
    held-out samples; quantize.max_accuracy_drop turns that into a gate (exit code 3).
    --mode auto picks the smallest mode that passes the gate and says why each smaller
    one was rejected; int8-selective keeps the layers int8 hurts most in float.

    \b
    Examples:
      mlfn quantize                          # quantize.mode from mlfn.yaml -> model.tflite
      mlfn quantize --mode int8 --out digits.tflite
      mlfn quantize --mode auto              # the smallest mode that passes the gate
      mlfn quantize --compare                # every mode side by side, report.json + chart
      mlfn quantize --target tflite-runtime  # op versions the 2.14 interpreter loads
      mlfn quantize -o json | jq .size_bytes
    """
    from pathlib import Path

    from mlfn.config import load_config
    from mlfn.output import Progress, emit

    overrides = {"quantize.target": target, "quantize.max_accuracy_drop": max_accuracy_drop,
                 "quantize.allow_select_tf_ops": True if allow_select_tf_ops else None,
                 "quantize.per_channel": False if per_tensor else None}
    cfg = load_config(config_path, overrides=overrides)
    progress = Progress()
    if compare:
        from mlfn.model.compare import compare_modes

        modes = [mode] if mode else None
        report = compare_modes(cfg, modes=modes, model=_extra(cfg, model_name), out_dir=report_dir,
                               use_cache=not no_cache, progress=progress)
        emit(report, output, text=lambda r: r.render())
        return
    from mlfn.model import quantize_model
    from mlfn.model.report import render_result

    extra = _extra(cfg, model_name)
    if out_path is None:
        out_path = str(cfg.project_dir / (f"{extra.name}.tflite" if extra else "model.tflite"))
    result = quantize_model(cfg, model=extra, mode=mode, out_path=out_path, use_cache=not no_cache,
                            progress=progress)
    for w in result.warnings:
        click.echo(f"Warning: {w}", err=True)
    emit(result, output, text=render_result)


def _extra(cfg, name):
    if not name:
        return None
    from mlfn.errors import ConfigError

    for m in cfg.models:
        if m.name == name:
            return m
    known = ", ".join(m.name for m in cfg.models) or "none"
    raise ConfigError(f"No model named {name!r} under 'models:' in {cfg.source}; known: {known}.")
