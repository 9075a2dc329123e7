"""The data plane: a function = its models, their pipelines and the serving settings.

    fn = load_function("/opt/mlfn/function")          # reads function.json, loads models
    fn.predict({"image": "<base64 PNG>"})              # {"model": "digits", "predictions": [...]}

Every protocol (OpenWhisk /run, plain /predict, OIP v2, TF Serving) decodes its request,
calls `Function.predict` (pipelines applied) or `Function.infer` (model tensors), and
encodes the result. Stages, KServe style: `preprocess` (one pipeline run per input, then
stacked into one batch), `model.predict` (one interpreter call for the whole batch),
`postprocess` (one pipeline run per prediction).

Which inputs go through pre-processing: encoded images (base64 text, bytes, `{"b64": ...}`)
always do. Numeric tensors skip an *image* pipeline (one starting with `decode_image`):
they are taken as model inputs as they are. A pipeline without `decode_image` is a tensor
pipeline (e.g. `normalize` for tabular data) and numeric inputs go through it.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from mlfn_runtime.errors import ConfigurationError, CustomStepError, InvalidInput, NotFound
from mlfn_runtime.model import ModelRunner, TensorInfo
from mlfn_runtime.pipeline import POST, PRE, Pipeline

FUNCTION_FILE = "function.json"
INPUT_FIELDS = ("image", "images", "instances", "inputs")


@dataclass
class Serving:
    max_batch_size: int = 32
    max_payload_bytes: int = 1048576
    interpreter: str = "per-thread"  # per-thread | lock (see bench/runtime_bench.py)
    num_threads: int = 1
    workers: int = 8

    @classmethod
    def from_dict(cls, data: Optional[dict], environ: Optional[dict] = None) -> "Serving":
        """function.json's `serving`, overridden by `MLFN_SERVING_<KEY>` environment
        variables (e.g. MLFN_SERVING_INTERPRETER=per-thread) so a deployment can tune a
        built image without rebuilding it."""
        data = dict(data or {})
        env = os.environ if environ is None else environ
        out = cls()
        for key in vars(out):
            value = env.get("MLFN_SERVING_" + key.upper())
            if value:
                try:
                    data[key] = int(value) if isinstance(getattr(out, key), int) else value
                except ValueError:
                    raise ConfigurationError(f"MLFN_SERVING_{key.upper()} must be an integer, not {value!r}.") from None
        for key, value in data.items():
            if not hasattr(out, key):
                continue  # newer build sides may add keys; ignore what this runtime does not know
            default = getattr(out, key)
            if isinstance(default, int) and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigurationError(f"serving.{key} in {FUNCTION_FILE} must be a positive integer, not {value!r}.")
            setattr(out, key, value)
        if out.interpreter not in ("lock", "per-thread"):
            raise ConfigurationError(f"serving.interpreter in {FUNCTION_FILE} is {out.interpreter!r}; choose lock or per-thread.")
        return out


@dataclass
class ModelEntry:
    """One bundled model: runner + pipelines + identity."""

    name: str
    runner: ModelRunner
    pre: Pipeline
    post: Pipeline
    path: str = ""
    sha256: str = ""
    quantization: str = ""

    def metadata(self) -> dict:
        """Open Inference Protocol model metadata."""
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": "tflite",
            "inputs": [t.to_dict() for t in self.runner.inputs],
            "outputs": [t.to_dict() for t in self.runner.outputs],
        }


@dataclass
class Function:
    name: str
    models: dict  # name -> ModelEntry, in function.json order (the first is the default)
    serving: Serving = field(default_factory=Serving)
    base_dir: str = "."
    load_seconds: float = 0.0

    @property
    def default_model(self) -> ModelEntry:
        return next(iter(self.models.values()))

    def model(self, name: Optional[str]) -> ModelEntry:
        if name is None:
            return self.default_model
        entry = self.models.get(name)
        if entry is None:
            raise NotFound(f"model '{name}' is not in function '{self.name}' (models: {', '.join(self.models)})")
        return entry

    # ------------------------------------------------------------------ predict
    def predict(self, request: Any) -> dict:
        """The request/response shapes of actions/README.md (pipelines applied)."""
        if not isinstance(request, dict):
            raise InvalidInput(f"the request must be a JSON object with one of {', '.join(INPUT_FIELDS)}, not {_jtype(request)}")
        entries, combined = self._select(request)
        items = self._items(request)
        results = {}
        for entry in entries:
            results[entry.name] = {"predictions": self._run(entry, items)}
        if not combined:
            name = entries[0].name
            return {"model": name, **results[name]}
        return {"results": results}

    def _select(self, request: dict):
        """(entries, combined?): 'model' picks one; 'models' several; none = all bundled."""
        if "model" in request and request["model"] is not None:
            name = request["model"]
            if not isinstance(name, str):
                raise InvalidInput(f"'model' must be a model name, not {_jtype(name)}")
            return [self.model(name)], False
        if "models" in request and request["models"] is not None:
            names = request["models"]
            if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
                raise InvalidInput("'models' must be a non-empty list of model names")
            return [self.model(n) for n in dict.fromkeys(names)], True
        return list(self.models.values()), len(self.models) > 1

    def _items(self, request: dict) -> list:
        """[(label, raw)] - one per input; raw is encoded image or a numeric array row."""
        present = [f for f in INPUT_FIELDS if f in request]
        if not present:
            raise InvalidInput(f"the request has no input: send one of {', '.join(repr(f) for f in INPUT_FIELDS)}")
        if len(present) > 1:
            raise InvalidInput(f"send only one of {', '.join(repr(f) for f in present)}")
        key = present[0]
        value = request[key]
        if key == "image":
            if not isinstance(value, (str, bytes, dict)):
                raise InvalidInput(f"'image' must be a base64-encoded image, not {_jtype(value)}")
            items = [("image", value)]
        elif key == "images":
            if not isinstance(value, list) or not value:
                raise InvalidInput("'images' must be a non-empty list of base64-encoded images")
            items = []
            for i, v in enumerate(value):
                if not isinstance(v, (str, bytes, dict)):
                    raise InvalidInput(f"'images[{i}]' must be a base64-encoded image, not {_jtype(v)}")
                items.append((f"images[{i}]", v))
        elif key == "instances":
            if not isinstance(value, list) or not value:
                raise InvalidInput("'instances' must be a non-empty list")
            items = []
            for i, v in enumerate(value):
                label = f"instances[{i}]"
                if isinstance(v, (str, bytes)) or (isinstance(v, dict) and set(v) == {"b64"}):
                    items.append((label, v))
                elif isinstance(v, dict):
                    items.append((label, {k: to_numeric(x, f"{label}.{k}") for k, x in v.items()}))
                else:
                    items.append((label, to_numeric(v, label)))
        else:  # inputs: a tensor with the batch dimension, or {input name: tensor}
            if isinstance(value, dict) and not (set(value) == {"b64"}):
                if not value:
                    raise InvalidInput("'inputs' is an empty object; send {input_name: tensor, ...} or a tensor")
                arrays = {k: to_numeric(x, f"inputs.{k}", batch=True) for k, x in value.items()}
                sizes = {a.shape[0] for a in arrays.values()}
                if len(sizes) != 1:
                    raise InvalidInput(f"'inputs' tensors need the same batch size, got {sorted(sizes)}")
                n = sizes.pop()
                items = [(f"inputs[{i}]", {k: a[i] for k, a in arrays.items()}) for i in range(n)]
            else:
                arr = to_numeric(value, "inputs", batch=True)
                items = [(f"inputs[{i}]", arr[i]) for i in range(arr.shape[0])]
        limit = self.serving.max_batch_size
        if len(items) > limit:
            raise InvalidInput(
                f"'{key}' holds {len(items)} inputs; this function takes at most {limit} per request (serving.max_batch_size)"
            )
        return items

    def _run(self, entry: ModelEntry, items: list) -> list:
        batch = self.preprocess(entry, items)
        outputs = entry.runner.predict(batch)
        return self.postprocess(entry, outputs, len(items))

    # ------------------------------------------------------------------ stages
    def preprocess(self, entry: ModelEntry, items: list):
        """Run the pre pipeline per input, stack into one batch per model input."""
        pre = entry.pre
        rows = []
        for label, raw in items:
            image = isinstance(raw, (str, bytes, bytearray)) or (isinstance(raw, dict) and set(raw) == {"b64"})
            try:
                if image:
                    if not pre.takes_images:
                        raise InvalidInput(
                            f"model '{entry.name}' takes tensors, not encoded images (its pre-processing has no decode_image step)"
                        )
                    rows.append(pre(raw))
                elif pre.takes_images or not len(pre):
                    rows.append(raw)
                else:
                    rows.append(pre(raw, skip_image_steps=True))
            except (InvalidInput, CustomStepError) as e:
                raise type(e)(f"'{label}': {e}", *([e.status] if isinstance(e, CustomStepError) else [])) from None
        inputs = entry.runner.inputs
        if len(inputs) > 1 or isinstance(rows[0], dict):
            if not all(isinstance(r, dict) for r in rows):
                names = ", ".join(t.name for t in inputs)
                raise InvalidInput(f"model '{entry.name}' takes several inputs ({names}); send each input as {{name: tensor}}")
            return {t.name: self._stack([r.get(t.name) for r in rows], t, items, entry) for t in inputs}
        return self._stack(rows, inputs[0], items, entry)

    def _stack(self, rows: list, t: TensorInfo, items: list, entry: ModelEntry) -> np.ndarray:
        arrays = []
        for (label, _), r in zip(items, rows):
            if r is None:
                raise InvalidInput(f"'{label}' has no value for input '{t.name}' of model '{entry.name}'")
            a = np.asarray(r)
            if a.dtype.kind not in "biuf":
                raise InvalidInput(f"'{label}' must be numeric, got {a.dtype}")
            arrays.append(fit_shape(a, t, label, entry.name))
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise InvalidInput(f"inputs of one request must have the same shape after pre-processing, got {sorted(shapes)}")
        return np.stack(arrays)

    def postprocess(self, entry: ModelEntry, outputs: dict, n: int) -> list:
        names = list(outputs)
        preds = []
        for i in range(n):
            row = outputs[names[0]][i] if len(names) == 1 else {k: outputs[k][i] for k in names}
            try:
                preds.append(jsonable(entry.post(row)))
            except CustomStepError as e:
                raise CustomStepError(f"prediction {i}: {e}", e.status) from None
            except TypeError as e:  # a custom post step returned what JSON cannot hold
                raise CustomStepError(f"prediction {i}: post-processing of model '{entry.name}' {e}") from None
        return preds

    # ------------------------------------------------------------------ tensors (OIP v2, TF Serving)
    def infer(self, model: Optional[str], inputs: dict, outputs: Optional[list] = None) -> dict:
        """Model tensors in, model tensors out (no post-processing). `inputs` maps input
        names to arrays with the batch dimension, or to a list of encoded images (which go
        through the model's pre-processing). A single-input model accepts any one name."""
        entry = self.model(model)
        runner = entry.runner
        if not inputs:
            raise InvalidInput(f"the request has no inputs; model '{entry.name}' takes {', '.join(runner.input_names)}")
        if len(runner.inputs) == 1 and len(inputs) == 1:
            (name, value), = inputs.items()
            feeds = {runner.inputs[0].name: self._tensor_input(entry, runner.inputs[0], name, value)}
        else:
            unknown = [k for k in inputs if k not in runner.input_names]
            if unknown:
                raise InvalidInput(f"model '{entry.name}' has no input '{unknown[0]}' (inputs: {', '.join(runner.input_names)})")
            feeds = {t.name: self._tensor_input(entry, t, t.name, inputs.get(t.name)) for t in runner.inputs}
        n = next(iter(feeds.values())).shape[0]
        if n > self.serving.max_batch_size:
            raise InvalidInput(
                f"the request holds {n} inputs; this function takes at most {self.serving.max_batch_size} "
                "per request (serving.max_batch_size)"
            )
        result = runner.predict(feeds)
        if outputs:
            missing = [o for o in outputs if o not in result]
            if missing:
                raise InvalidInput(f"model '{entry.name}' has no output '{missing[0]}' (outputs: {', '.join(result)})")
            result = {o: result[o] for o in outputs}
        return result

    def _tensor_input(self, entry: ModelEntry, t: TensorInfo, label: str, value) -> np.ndarray:
        if value is None:
            raise InvalidInput(f"input '{t.name}' of model '{entry.name}' is missing")
        if isinstance(value, list) and value and all(isinstance(v, (bytes, str)) or (isinstance(v, dict) and set(v) == {"b64"}) for v in value):
            items = [(f"{label}[{i}]", v) for i, v in enumerate(value)]
            if len(items) > self.serving.max_batch_size:
                raise InvalidInput(
                    f"'{label}' holds {len(items)} inputs; this function takes at most {self.serving.max_batch_size} "
                    "per request (serving.max_batch_size)"
                )
            return self.preprocess(entry, items)
        arr = value if isinstance(value, np.ndarray) else to_numeric(value, label, batch=True)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise InvalidInput(f"'{label}' holds NaN or infinite values")
        if arr.ndim == 0:
            raise InvalidInput(f"'{label}' must have a batch dimension")
        rows = [fit_shape(arr[i], t, label, entry.name) for i in range(arr.shape[0])] if arr.shape[0] else []
        if not rows:
            raise InvalidInput(f"'{label}' is empty")
        return np.stack(rows)


# --------------------------------------------------------------------------- loading

def load_function(function_dir: str) -> Function:
    """Read `function.json` in `function_dir`, load every model once and build pipelines."""
    t0 = time.perf_counter()
    function_dir = os.path.abspath(function_dir)
    path = os.path.join(function_dir, FUNCTION_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except FileNotFoundError:
        raise ConfigurationError(f"no {FUNCTION_FILE} in {function_dir}; build the image with 'mlfn build'.") from None
    except (OSError, ValueError) as e:
        raise ConfigurationError(f"{path} cannot be read: {e}.") from None
    if not isinstance(spec, dict):
        raise ConfigurationError(f"{path} must hold a JSON object.")
    serving = Serving.from_dict(spec.get("serving"))
    models_spec = spec.get("models")
    if not isinstance(models_spec, list) or not models_spec:
        raise ConfigurationError(f"{path} must list at least one model under 'models'.")
    models: dict = {}
    for i, m in enumerate(models_spec):
        if not isinstance(m, dict) or not m.get("name") or not m.get("path"):
            raise ConfigurationError(f"models[{i}] in {path} needs a 'name' and a 'path'.")
        name = str(m["name"])
        if name in models:
            raise ConfigurationError(f"model name '{name}' appears twice in {path}.")
        try:
            labels = m.get("labels") or spec.get("labels")
            pre = Pipeline(m.get("pre") or [], function_dir, stage=PRE, labels=labels)
            post = Pipeline(m.get("post") or [], function_dir, stage=POST, labels=labels)
        except ValueError as e:
            raise ConfigurationError(f"model '{name}' in {path}: {e}.") from None
        model_path = m["path"] if os.path.isabs(m["path"]) else os.path.join(function_dir, m["path"])
        runner = ModelRunner(
            path=model_path, num_threads=serving.num_threads, mode=serving.interpreter,
            max_interpreters=max(1, min(serving.workers, available_cpus())), name=name,
        )
        models[name] = ModelEntry(
            name=name, runner=runner, pre=pre, post=post, path=m["path"],
            sha256=str(m.get("sha256", "")), quantization=str(m.get("quantization", "")),
        )
    return Function(
        name=str(spec.get("name") or next(iter(models))), models=models, serving=serving,
        base_dir=function_dir, load_seconds=time.perf_counter() - t0,
    )


# --------------------------------------------------------------------------- helpers

def available_cpus() -> int:
    """CPUs this process may use: its affinity set, capped by a cgroup CPU quota (v2 or v1).
    More interpreters than CPUs run no faster and only cost memory."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    for path, parse in (("/sys/fs/cgroup/cpu.max", lambda t: t.split()),
                        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", None)):
        try:
            with open(path) as f:
                text = f.read()
            if parse:
                quota, period = parse(text)
            else:
                with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
                    quota, period = text.strip(), f.read().strip()
            if quota not in ("max", "-1") and int(period) > 0:
                n = min(n, max(1, -(-int(quota) // int(period))))
            break
        except (OSError, ValueError):
            continue
    return n


def to_numeric(value: Any, label: str, batch: bool = False) -> np.ndarray:
    """A JSON number/nested list -> ndarray; 400 naming `label` when ragged, non-numeric or NaN/Inf."""
    if isinstance(value, np.ndarray):
        arr = value
    else:
        if isinstance(value, (str, bytes, dict)) or value is None:
            raise InvalidInput(f"'{label}' must be a number or a nested list of numbers, not {_jtype(value)}")
        try:
            arr = np.array(value)
        except (ValueError, TypeError):
            raise InvalidInput(f"'{label}' is not a rectangular nested list of numbers") from None
    if arr.dtype.kind not in "biuf":
        what = "a ragged list, or integers beyond 64 bits" if arr.dtype == object else arr.dtype
        raise InvalidInput(f"'{label}' must hold only numbers (got {what})")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise InvalidInput(f"'{label}' holds NaN or infinite values")
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    elif arr.dtype == np.int64 and arr.size and arr.min() >= -(2 ** 31) and arr.max() < 2 ** 31:
        arr = arr.astype(np.int32)
    if batch and arr.ndim == 0:
        raise InvalidInput(f"'{label}' must be a list with the batch dimension first")
    if batch and arr.shape[0] == 0:
        raise InvalidInput(f"'{label}' is empty")
    return arr


def fit_shape(a: np.ndarray, t: TensorInfo, label: str, model: str) -> np.ndarray:
    """One input row shaped for tensor `t` (without batch): exact, or equal after dropping
    size-1 dimensions, or flattened for a [N, features] input. Else 400."""
    want = t.shape[1:]
    got = a.shape
    if len(want) == len(got) and all(w in (-1, g) for w, g in zip(want, got)):
        return a
    if -1 not in want:
        if [d for d in got if d != 1] == [d for d in want if d != 1]:
            return a.reshape(want)
        if len(want) == 1 and a.size == want[0]:
            return a.reshape(want)
    fmt = lambda s: "[" + ", ".join("?" if d == -1 else str(d) for d in s) + "]"  # noqa: E731
    raise InvalidInput(f"'{label}' has shape {fmt(got)} but model '{model}' takes {fmt(want)} per input")


def jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if x is None or isinstance(x, (str, int, float)):
        return x
    raise TypeError(f"returned {type(x).__name__} {str(x)[:60]!r}, which JSON cannot hold")


def _jtype(v) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(v), type(v).__name__)
