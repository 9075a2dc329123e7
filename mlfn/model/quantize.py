"""`quantize_model`: a trained model in, a small verified `.tflite` and a report out.

Steps: resolve the model (local or s3://), look the conversion up in the cache (keyed by
a hash of the model files and every option that changes the result), otherwise load it
with TensorFlow, calibrate (int8/int16x8/int8-selective), convert, check that LiteRT loads
it (and, for `quantize.target: tflite-runtime`, that tflite-runtime 2.14 does too), count
ops before and after, evaluate on the validation data, and enforce
`quantize.max_accuracy_drop` (mlfn.model.gate). `int8-selective` keeps the layers int8
hurts most in float (mlfn.model.selective); `auto` converts several modes and keeps the
smallest that passes the gate (mlfn.model.auto).

Files are written atomically (a temporary sibling, then a rename): a cache entry or an
output file that exists is complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from mlfn.config import Config, ExtraModel, QUANTIZE_MODES
from mlfn.errors import ConfigError, ModelError
from mlfn.model import litert
from mlfn.model.gate import enforce_gate, gate_applies, gate_reason, gate_warnings
from mlfn.model.source import ModelSource, hash_path, resolve_source

CACHE_FORMAT = 1  # bump when the cached files' meaning changes
CALIBRATED = ("int8", "int16x8", "int8-selective")


@dataclass
class QuantizeResult:
    tflite_path: str  # the converted model (out_path, or its cache entry)
    sha256: str  # of the .tflite file
    mode: str  # none | dynamic | float16 | int8 | int8-selective | int16x8 | passthrough (a .tflite source)
    size_bytes: int
    original_size_bytes: int
    source: str  # model.path as written (local path or s3:// URL)
    cached: bool  # the conversion came from the cache
    ops_before: dict  # Keras layer types or TF graph ops -> count
    ops_after: dict  # TFLite op types -> count
    evaluation: Optional[dict]  # see mlfn.model.evaluate.evaluate; None without data to measure
    model_name: str = ""
    source_format: str = ""  # saved_model | keras | h5 | tflite
    target: str = "litert"  # runtime the op versions were chosen for
    input_type: str = "float32"
    output_type: str = "float32"
    select_tf_ops: bool = False
    per_channel: bool = True  # per-channel weight scales (false: per-tensor, smaller)
    verified: list = field(default_factory=list)  # runtimes that loaded the model
    warnings: list = field(default_factory=list)
    selective: Optional[dict] = None  # int8-selective: float_layers, attempts, cost (mlfn.model.selective)
    auto: Optional[dict] = None  # mode auto: {"picked": mode, "candidates": [...]} (mlfn.model.auto)

    @property
    def size_ratio(self) -> float:
        return self.size_bytes / self.original_size_bytes if self.original_size_bytes else 1.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size_ratio"] = round(self.size_ratio, 4)
        return d


def cache_root(cfg: Config) -> Path:
    return Path(cfg.resolve(cfg.quantize.cache_dir) if cfg.quantize.cache_dir else cfg.project_dir / ".mlfn" / "cache")


def _tf_version() -> str:
    from importlib import metadata

    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "none"


def _data_hash(path: Optional[str]) -> Optional[str]:
    if not path:
        return None
    p = Path(path)
    if not p.exists():
        return "missing:" + path
    return hash_path(p)[0]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes) -> None:
    """Write `path` all at once (a temporary sibling renamed into place), with the mode a
    plain open() would give it (0666 less the umask), not mkstemp's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@dataclass
class _Plan:
    """Everything that decides the conversion, resolved from the config once."""

    name: str
    path: str
    signature: str
    mode: str
    target: str
    input_type: str
    output_type: str
    allow_select: bool
    per_channel: bool
    representative: Optional[str]
    samples: int
    validation: Optional[str]
    top_k: list
    max_drop: Optional[float]
    max_mse_pct: Optional[float]
    auto_modes: list
    max_float_share: float
    pre: list
    labels: Optional[str]
    base_dir: Path  # custom pre-processing step files are relative to it


def _plan(cfg: Config, model: Optional[ExtraModel], mode: Optional[str]) -> _Plan:
    q = cfg.quantize
    if model is None:
        name, path, signature, mode_cfg = cfg.model_name, cfg.model.path, cfg.model.signature, q.mode
        pre, labels = cfg.pipeline.pre, cfg.pipeline.labels
    else:
        name, path, signature = model.name, model.path, model.signature
        mode_cfg = model.quantize or q.mode
        pre = model.pre if model.pre is not None else cfg.pipeline.pre
        labels = model.labels or cfg.pipeline.labels
    mode = mode or mode_cfg
    if mode not in QUANTIZE_MODES:
        raise ConfigError(f"Quantization mode {mode!r} is unknown; choose one of: {', '.join(QUANTIZE_MODES)}.")
    if not path:
        raise ConfigError(f"model.path is empty in {cfg.source or 'mlfn.yaml'}.")
    # A function image built with tflite-runtime needs op versions 2.14 can load, whatever
    # quantize.target says; such models load in LiteRT too.
    target = "tflite-runtime" if "tflite-runtime" in (q.target, cfg.build.runtime) else "litert"
    return _Plan(
        name=name, path=cfg.resolve(path), signature=signature, mode=mode, target=target,
        input_type=q.input_type, output_type=q.output_type, allow_select=bool(q.allow_select_tf_ops),
        per_channel=bool(q.per_channel),
        representative=cfg.resolve(q.representative_data), samples=int(q.representative_samples),
        validation=cfg.resolve(q.validation_data), top_k=[int(k) for k in (q.top_k or [1])],
        max_drop=q.max_accuracy_drop, max_mse_pct=q.max_mse_increase_pct, auto_modes=list(q.auto_modes),
        max_float_share=float(q.selective_max_float_share), pre=list(pre or []), labels=cfg.resolve(labels),
        base_dir=cfg.project_dir,
    )


def _conversion_key(plan: _Plan, src: ModelSource) -> str:
    calibrated = plan.mode in CALIBRATED and src.format != "tflite"
    rep_is_dir = bool(plan.representative and Path(plan.representative).is_dir())
    # int8-selective stops at the first attempt that passes the gate on the validation data
    selective = plan.mode == "int8-selective" and src.format != "tflite"
    val_is_dir = bool(plan.validation and Path(plan.validation).is_dir())
    parts = {
        "format": CACHE_FORMAT, "model": src.sha256, "model_format": src.format,
        "signature": plan.signature if src.format == "saved_model" else None,
        "mode": plan.mode if src.format != "tflite" else "passthrough", "target": plan.target,
        "io": [plan.input_type, plan.output_type] if calibrated else None,
        "select_tf_ops": plan.allow_select,
        "per_channel": plan.per_channel if plan.mode != "none" and src.format != "tflite" else None,
        "representative": [_data_hash(plan.representative), plan.samples] if calibrated else None,
        "pre": plan.pre if calibrated and rep_is_dir else None,
        "tensorflow": _tf_version() if src.format != "tflite" else None,
        "selective": [_data_hash(plan.validation), plan.max_drop, plan.max_mse_pct, plan.max_float_share,
                      plan.pre if val_is_dir else None, _data_hash(plan.labels) if val_is_dir else None]
        if selective else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _eval_key(conv_key: str, plan: _Plan) -> str:
    rep_is_dir = bool(plan.validation and Path(plan.validation).is_dir())
    parts = {"format": 2, "conversion": conv_key, "validation": _data_hash(plan.validation), "top_k": plan.top_k,
             "pre": plan.pre if rep_is_dir else None, "labels": _data_hash(plan.labels) if rep_is_dir else None}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _read_labels(path: Optional[str]) -> Optional[list]:
    if not path or not Path(path).is_file():
        return None
    return [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]


def quantize_model(cfg: Config, *, model: Optional[ExtraModel] = None, mode: Optional[str] = None,
                   out_path: Optional[str] = None, use_cache: bool = True,
                   progress: Optional[Callable[[str], None]] = None, check_gate: bool = True) -> QuantizeResult:
    """Convert the main model (or `model`, one of `cfg.models`) to .tflite; see the module doc.

    Raises ModelError (bad model or data, unsupported ops), ConfigError (bad option) or
    AccuracyGateError (the converted model lost more than quantize.max_accuracy_drop; with
    check_gate=False the result is returned instead, as `mlfn quantize --compare` wants)."""
    say = progress or (lambda _msg: None)
    from mlfn.pipelines import validate_pipelines

    validate_pipelines(cfg)  # the steps `mlfn build` would reject, before any slow work
    plan = _plan(cfg, model, mode)
    if plan.mode == "auto":
        result = _auto(cfg, model, plan, use_cache, say)
    else:
        result = _quantize_one(cfg, plan, use_cache, say)
        if check_gate:
            sel = result.selective or {}
            note = (f"int8-selective kept {len(sel['float_layers'])} of {sel['layers']} layers in float (the most "
                    f"quantize.selective_max_float_share {sel['max_float_share']:g} allows) and still fails."
                    if sel and not sel.get("passed") else "")
            enforce_gate(result, plan.max_drop, plan.max_mse_pct, note)
    if out_path:
        out = Path(out_path)
        atomic_write(out, Path(result.tflite_path).read_bytes())
        result.tflite_path = str(out.resolve())
    return result


def _need_measurement(plan: _Plan, what: str, source) -> None:
    if not plan.validation:
        raise ConfigError(f"quantize.mode {what} needs validation data to measure the converted model against the "
                          f"gate; set quantize.validation_data in {source or 'mlfn.yaml'} (an .npz with x and y, or a "
                          "folder of labelled images).")
    if plan.max_drop is None and plan.max_mse_pct is None:
        raise ConfigError(f"quantize.mode {what} needs a gate to pass; set quantize.max_accuracy_drop (classifiers, "
                          f"in points) or quantize.max_mse_increase_pct (regression models) in {source or 'mlfn.yaml'}.")


def _auto(cfg: Config, model: Optional[ExtraModel], plan: _Plan, use_cache: bool, say) -> QuantizeResult:
    from mlfn.model.auto import choose_mode

    _need_measurement(plan, "auto", cfg.source)

    def convert(mode: str) -> QuantizeResult:
        r = _quantize_one(cfg, _plan(cfg, model, mode), use_cache, say)
        if not gate_applies(plan.max_drop, plan.max_mse_pct, r.evaluation):
            why = gate_warnings(plan.max_drop, plan.max_mse_pct, r.evaluation) or ["it has no validation metric"]
            raise ConfigError(f"quantize.mode auto cannot judge {mode}: {why[0]}")
        return r

    picked, rows = choose_mode(plan.auto_modes, convert,
                               lambda r: gate_reason(r.mode, plan.max_drop, plan.max_mse_pct, r.evaluation), say)
    picked.auto = {"picked": picked.mode, "candidates": rows}
    say(f"auto: picked {picked.mode}")
    return picked


def _quantize_one(cfg: Config, plan: _Plan, use_cache: bool, say) -> QuantizeResult:
    """One mode's conversion and evaluation, through the cache; the gate is the caller's."""
    from mlfn.model.convert import check_io_types

    if plan.mode in CALIBRATED:
        check_io_types(plan.mode, plan.input_type, plan.output_type)
    cache = cache_root(cfg)
    src = resolve_source(plan.path, cache, say)
    if plan.mode == "int8-selective" and src.format != "tflite":
        _need_measurement(plan, plan.mode, cfg.source)
    _check_data_paths(plan, src)
    key = _conversion_key(plan, src)
    entry, meta_file = cache / f"{key}.tflite", cache / f"{key}.json"
    loaded = None
    cached = use_cache and entry.is_file() and meta_file.is_file()
    if cached:
        say(f"Using cached conversion {entry.name}")
        meta = json.loads(meta_file.read_text())
        content = entry.read_bytes()
        if hashlib.sha256(content).hexdigest() != meta.get("sha256"):
            cached = False  # damaged by hand: convert again
    if not cached:
        loaded, content, meta = _convert(plan, src, say)
        atomic_write(entry, content)
        atomic_write(meta_file, json.dumps(meta, indent=2).encode())
    if litert.flex_ops(meta["ops_after"]):
        evaluation = None  # LiteRT cannot run Flex ops without TensorFlow: nothing to measure with
    else:
        evaluation = _evaluation(plan, src, key, content, loaded, cache, use_cache, say)
    result = QuantizeResult(
        tflite_path=str(entry), sha256=meta["sha256"], mode=meta["mode"], size_bytes=len(content),
        original_size_bytes=src.size_bytes, source=src.origin, cached=bool(cached),
        ops_before=meta["ops_before"], ops_after=meta["ops_after"], evaluation=evaluation,
        model_name=plan.name, source_format=src.format, target=plan.target,
        input_type=meta.get("input_type", "float32"), output_type=meta.get("output_type", "float32"),
        select_tf_ops=plan.allow_select, per_channel=plan.per_channel, verified=meta.get("verified", []),
        warnings=list(meta.get("warnings", [])), selective=meta.get("selective"),
    )
    result.warnings += gate_warnings(plan.max_drop, plan.max_mse_pct, evaluation)
    return result


def _check_data_paths(plan: _Plan, src: ModelSource) -> None:
    """Missing data files are reported before the (slow) model load, not after it."""
    calibrates = plan.mode in CALIBRATED and src.format != "tflite"
    if calibrates and not plan.representative:
        raise ModelError(
            f"Mode {plan.mode} needs calibration data; set quantize.representative_data in mlfn.yaml "
            "(an .npy/.npz of model inputs, or a folder of images)."
        )
    for key, path in (("quantize.representative_data", plan.representative if calibrates else None),
                      ("quantize.validation_data", plan.validation)):
        if path and not Path(path).exists():
            raise ModelError(f"{key} {path} does not exist; fix the path in mlfn.yaml or remove the key.")


def _convert(plan: _Plan, src: ModelSource, say: Callable[[str], None]):
    warnings = []
    if src.format == "tflite":
        content = src.path.read_bytes()
        if not (plan.allow_select and litert.flex_ops(litert.op_counts(content))):
            litert.check_tflite(content, src.origin)
        if plan.mode != "none":
            warnings.append(f"{src.origin} is already a .tflite model: passed through as is (quantize.mode {plan.mode} not applied).")
        ops = litert.op_counts(content)
        ins, outs = litert.io_types(content)
        meta = {"mode": "passthrough", "ops_before": ops, "ops_after": ops,
                "input_type": ins[0] if ins else "float32", "output_type": outs[0] if outs else "float32"}
        loaded = None
    else:
        loaded, content, meta = _convert_model(plan, src, say)
    verified = []
    flex = litert.flex_ops(meta["ops_after"])
    if flex:
        warnings.append(
            f"SELECT_TF_OPS kept {', '.join(flex)} as TensorFlow (Flex) ops: the function image needs full "
            "TensorFlow to run them (far larger, slower to start), and mlfn cannot evaluate the model without it."
        )
    else:
        litert.check_tflite(content, f"The converted model from {src.origin}")
        verified.append("litert")
    if plan.target == "tflite-runtime" and not flex:
        from mlfn.model.tflite_runtime import verify_tflite_runtime

        say("Checking that tflite-runtime 2.14 loads the model")
        verify_tflite_runtime(content, src.origin, progress=say)
        verified.append("tflite-runtime")
    meta.update(sha256=hashlib.sha256(content).hexdigest(), verified=verified, warnings=warnings,
                source=src.origin, source_sha256=src.sha256)
    return loaded, content, meta


def _convert_model(plan: _Plan, src: ModelSource, say: Callable[[str], None]):
    """(LoadedModel, tflite bytes, meta) of a SavedModel/Keras source in plan.mode."""
    from mlfn.model.convert import convert
    from mlfn.model.data import load_representative
    from mlfn.model.load import load_model

    say(f"Loading {src.format} model {src.origin}")
    loaded = load_model(src, plan.signature)
    rep = None
    if plan.mode in CALIBRATED:
        rep = load_representative(plan.representative, loaded.inputs, plan.samples, plan.pre, plan.base_dir, say)
        say(f"Calibrating on {len(rep[0])} representative sample(s)")
    meta = {"mode": plan.mode}
    if plan.mode == "int8-selective":
        from mlfn.model.selective import convert_selective

        content, meta["selective"] = convert_selective(
            loaded, rep, _validation_set(plan, loaded.inputs, say), top_k=plan.top_k,
            max_float_share=plan.max_float_share, per_channel=plan.per_channel, say=say,
            gate=lambda ev: gate_reason(plan.mode, plan.max_drop, plan.max_mse_pct, ev))
    else:
        content = convert(loaded, plan.mode, representative=rep, input_type=plan.input_type,
                          output_type=plan.output_type, runtime_target=plan.target,
                          allow_select_tf_ops=plan.allow_select, per_channel=plan.per_channel, progress=say)
    calibrated = plan.mode in ("int8", "int16x8")
    meta.update(ops_before=loaded.ops(), ops_after=litert.op_counts(content),
                input_type=plan.input_type if calibrated else "float32",
                output_type=plan.output_type if calibrated else "float32")
    return loaded, content, meta


def _validation_set(plan: _Plan, specs: list, say):
    from mlfn.model.data import load_validation

    return load_validation(plan.validation, specs, plan.pre, plan.base_dir, _read_labels(plan.labels), say)


def _evaluation(plan: _Plan, src: ModelSource, key: str, content: bytes, loaded, cache: Path,
                use_cache: bool, say: Callable[[str], None]) -> Optional[dict]:
    from mlfn.model.evaluate import evaluate

    ekey = _eval_key(key, plan)
    efile = cache / f"{key}.eval-{ekey}.json"
    if use_cache and efile.is_file():
        return json.loads(efile.read_text())
    validation = None
    if plan.validation:
        if src.format != "tflite" and loaded is None:
            from mlfn.model.load import load_model

            say(f"Loading {src.format} model {src.origin} to evaluate it")
            loaded = load_model(src, plan.signature)
        validation = _validation_set(plan, loaded.inputs if loaded is not None else _tflite_specs(content), say)
    if validation is None:
        # Latency of the converted model only: loading TensorFlow just to time it is not worth it.
        report = evaluate(None, content, None, plan.top_k, sample=_zero_sample(content))
    else:
        report = evaluate(loaded, content, validation, plan.top_k, original_size=src.size_bytes, progress=say)
    atomic_write(efile, json.dumps(report, indent=2).encode())
    return report


def _tflite_specs(content: bytes) -> list:
    from mlfn.model.data import InputSpec

    it = litert.interpreter(content, delegates=False)
    return [InputSpec(_clean_name(d["name"]), tuple(int(x) if x > 0 else None for x in d["shape_signature"][1:]),
                      "float32" if d["dtype"].__name__ in ("int8", "uint8", "int16") else d["dtype"].__name__)
            for d in it.get_input_details()]


def _clean_name(name: str) -> str:
    """`serving_default_image:0` -> `image` (the model input's own name)."""
    name = name.split(":")[0]
    return name[len("serving_default_"):] if name.startswith("serving_default_") else name


def _zero_sample(content: bytes) -> list:
    import numpy as np

    return [np.zeros([1] + [d or 1 for d in s.shape], dtype=s.dtype) for s in _tflite_specs(content)]
