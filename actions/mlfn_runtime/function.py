"""The data plane: a function = its models, their pipelines and the serving settings.

    fn = load_function("/opt/mlfn/function")          # reads function.json, loads models
    fn.predict({"image": "<base64 PNG>"})              # {"model": "digits", "predictions": [...]}
    fn.infer("digits", {"pixels": batch})              # {"output_0": array}

Every protocol (OpenWhisk /run, plain /predict, OIP v2, TF Serving) only decodes its
request into `Function.predict`'s request (the shapes of actions/README.md, pipelines
applied) or `Function.infer`'s tensors (no post-processing), and encodes the result.
Everything else is checked here, once: which models, batch size, encoded images vs
tensors, NaN/Inf and dtypes (`tensors`), shapes. Stages, KServe style: `preprocess` (one
pipeline run per input, then stacked into one batch), the interpreter (one call for the
whole batch), `postprocess` (one pipeline run per prediction).

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

from mlfn_runtime.batching import Batcher
from mlfn_runtime.errors import BatchTooLarge, ConfigurationError, CustomStepError, InvalidInput, NotFound
from mlfn_runtime.in_flight import RequestsInFlight
from mlfn_runtime.interpreter import ModelRunner, TensorInfo
from mlfn_runtime.memory_budget import MemoryBudget
from mlfn_runtime.pipeline import POST, PRE, Pipeline
from mlfn_runtime.request_items import request_items
from mlfn_runtime.serving import FUNCTION_FILE, Serving
from mlfn_runtime.tensors import as_input_dtype, fit_shape, is_encoded_image, jsonable, jtype, to_numeric

__all__ = ["Function", "ModelEntry", "Serving", "load_function", "FUNCTION_FILE"]
MODEL_VERSION = "1"  # one version per function image; versions live on the platform


@dataclass
class ModelEntry:
    """One bundled model: runner + pipelines + identity. Requests reach the runner
    through `batcher` (serving.batching; a plain call when it is off)."""

    name: str
    runner: ModelRunner
    pre: Pipeline
    post: Pipeline
    batcher: Batcher
    path: str = ""
    sha256: str = ""
    quantization: str = ""

    def metadata(self) -> dict:
        """Open Inference Protocol model metadata."""
        return {
            "name": self.name,
            "versions": [MODEL_VERSION],
            "platform": "tflite",
            "inputs": [t.to_dict() for t in self.runner.inputs],
            "outputs": [t.to_dict() for t in self.runner.outputs],
        }


@dataclass
class Function:
    name: str
    models: dict  # name -> ModelEntry, in function.json order (the first is the default)
    in_flight: RequestsInFlight  # the server's requests in flight; every model's batcher reads it
    serving: Serving = field(default_factory=Serving)
    base_dir: str = "."
    load_seconds: float = 0.0
    memory: MemoryBudget = field(default_factory=lambda: MemoryBudget(None))  # for decoded images
    auth: dict = field(default_factory=dict)  # function.json's `auth` (mlfn_runtime.auth.AuthSettings)

    @property
    def default_model(self) -> ModelEntry:
        return next(iter(self.models.values()))

    def model(self, name: Optional[str], version: Optional[str] = None) -> ModelEntry:
        """The bundled model `name` (None: the default); `version` None, "" or "1"."""
        if name is None:
            return self.default_model
        entry = self.models.get(name)
        if entry is None:
            raise NotFound(f"model '{name}' is not in function '{self.name}' (models: {', '.join(self.models)})")
        if version not in (None, "", MODEL_VERSION):
            raise NotFound(f"model '{name}' has no version '{version}' (this function serves version {MODEL_VERSION})")
        return entry

    # ------------------------------------------------------------------ predict
    def predict(self, request: Any) -> dict:
        """The request/response shapes of actions/README.md (pipelines applied)."""
        entries, combined = self._select(request)
        field_name, items = request_items(request)
        self.check_batch_size(len(items), f"'{field_name}'")
        results = {entry.name: {"predictions": self._run(entry, items)} for entry in entries}
        if not combined:
            name = entries[0].name
            return {"model": name, **results[name]}
        return {"results": results}

    def _select(self, request: Any):
        """(entries, combined?): 'model' picks one; 'models' several; none = all bundled."""
        if not isinstance(request, dict):
            raise InvalidInput(f"the request must be a JSON object with one of image, images, instances, inputs, "
                               f"not {jtype(request)}")
        if request.get("model") is not None:
            name = request["model"]
            if not isinstance(name, str):
                raise InvalidInput(f"'model' must be a model name, not {jtype(name)}")
            return [self.model(name)], False
        if request.get("models") is not None:
            names = request["models"]
            if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
                raise InvalidInput("'models' must be a non-empty list of model names")
            return [self.model(n) for n in dict.fromkeys(names)], True
        return list(self.models.values()), len(self.models) > 1

    def check_batch_size(self, n: int, what: str) -> None:
        """At most serving.max_batch_size inputs per request; `what` names them."""
        limit = self.serving.max_batch_size
        if n > limit:
            raise BatchTooLarge(
                f"{what} holds {n} inputs; this function takes at most {limit} per request (serving.max_batch_size)"
            )

    def _run(self, entry: ModelEntry, items: list) -> list:
        batch = self.preprocess(entry, items)
        outputs = entry.batcher.predict(batch)
        return self.postprocess(entry, outputs, len(items))

    # ------------------------------------------------------------------ stages
    def preprocess(self, entry: ModelEntry, items: list):
        """Run the pre pipeline per input, stack into one batch per model input."""
        rows = [self._preprocess_one(entry, label, raw, self.memory) for label, raw in items]
        inputs = entry.runner.inputs
        if len(inputs) > 1 or isinstance(rows[0], dict):
            if not all(isinstance(r, dict) for r in rows):
                names = ", ".join(t.name for t in inputs)
                raise InvalidInput(f"model '{entry.name}' takes several inputs ({names}); send each input as {{name: tensor}}")
            return {t.name: self._stack([r.get(t.name) for r in rows], t, items, entry) for t in inputs}
        return self._stack(rows, inputs[0], items, entry)

    @staticmethod
    def _preprocess_one(entry: ModelEntry, label: str, raw, memory: MemoryBudget):
        """One input through the model's pre-processing; an encoded image is read from its
        header first and decoded only once the bytes its pipeline holds are reserved."""
        pre = entry.pre
        try:
            if is_encoded_image(raw):
                if not pre.takes_images:
                    raise InvalidInput(
                        f"model '{entry.name}' takes tensors, not encoded images (its pre-processing has no decode_image step)"
                    )
                img = pre.open_image(raw)
                with memory.reserve(pre.peak_bytes(img.size, img.mode), f"'{label}' ({img.width}x{img.height} {img.mode})"):
                    return pre(img)
            if pre.takes_images or not len(pre):
                return raw
            return pre(raw, skip_image_steps=True)
        except InvalidInput as e:
            raise InvalidInput(f"'{label}': {e}") from None
        except CustomStepError as e:
            raise CustomStepError(f"'{label}': {e}", e.status) from None

    @staticmethod
    def _stack(rows: list, t: TensorInfo, items: list, entry: ModelEntry) -> np.ndarray:
        arrays = []
        for (label, _), r in zip(items, rows):
            if r is None:
                raise InvalidInput(f"'{label}' has no value for input '{t.name}' of model '{entry.name}'")
            a = np.asarray(r)
            if a.dtype.kind not in "biuf":
                raise InvalidInput(f"'{label}' must be numeric, got {a.dtype}")
            a = fit_shape(a, t, label, entry.name)
            if a.dtype != t.client_dtype:  # the message is only built when a conversion is checked
                a = as_input_dtype(a, t.client_dtype, label, f"input '{t.name}' of model '{entry.name}'")
            arrays.append(a)
        if len(arrays) == 1:  # one input: a view with the batch dimension (np.stack costs more than the row)
            return arrays[0][None]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise InvalidInput(f"inputs of one request must have the same shape after pre-processing, got {sorted(shapes)}")
        return np.stack(arrays)

    @staticmethod
    def postprocess(entry: ModelEntry, outputs: dict, n: int) -> list:
        names = list(outputs)
        preds = []
        as_json = (lambda p: p) if entry.post.answers_json else jsonable
        for i in range(n):
            row = outputs[names[0]][i] if len(names) == 1 else {k: outputs[k][i] for k in names}
            try:
                preds.append(as_json(entry.post(row)))
            except CustomStepError as e:
                raise CustomStepError(f"prediction {i}: {e}", e.status) from None
            except TypeError as e:  # a custom post step returned what JSON cannot hold
                raise CustomStepError(f"prediction {i}: post-processing of model '{entry.name}' {e}") from None
        return preds

    # ------------------------------------------------------------------ tensors (OIP v2, TF Serving)
    def infer(self, model: Optional[str], inputs: dict, outputs: Optional[list] = None) -> dict:
        """Model tensors in, model tensors out (no post-processing). `inputs` maps input
        names to arrays (or nested lists) with the batch dimension, or to a list of encoded
        images (which go through the model's pre-processing). Names are the model's (or its
        raw TFLite names); another is a 400. Arrays are converted to the input's datatype
        only exactly (`tensors.as_input_dtype`). `outputs` selects outputs by name (None: all)."""
        entry = self.model(model)
        runner = entry.runner
        if not inputs:
            raise InvalidInput(f"the request has no inputs; model '{entry.name}' takes {', '.join(runner.input_names)}")
        inputs = {runner.aliases.get(k, k): v for k, v in inputs.items()}  # raw TFLite names too
        unknown = [k for k in inputs if k not in runner.input_names]
        if unknown:
            raise InvalidInput(f"model '{entry.name}' has no input '{unknown[0]}' (inputs: {', '.join(runner.input_names)})")
        feeds = {t.name: self._tensor_input(entry, t, t.name, inputs.get(t.name)) for t in runner.inputs}
        self.check_batch_size(next(iter(feeds.values())).shape[0], "the request")
        result = entry.batcher.predict(feeds)
        if outputs:
            missing = [o for o in outputs if o not in result]
            if missing:
                raise InvalidInput(f"model '{entry.name}' has no output '{missing[0]}' (outputs: {', '.join(result)})")
            result = {o: result[o] for o in outputs}
        return result

    def _tensor_input(self, entry: ModelEntry, t: TensorInfo, label: str, value) -> np.ndarray:
        if value is None:
            raise InvalidInput(f"input '{t.name}' of model '{entry.name}' is missing")
        if isinstance(value, list) and value and all(is_encoded_image(v) for v in value):
            self.check_batch_size(len(value), f"'{label}'")
            return self.preprocess(entry, [(f"{label}[{i}]", v) for i, v in enumerate(value)])
        arr = to_numeric(value, label, batch=True)
        rows = [fit_shape(arr[i], t, label, entry.name) for i in range(arr.shape[0])]
        return as_input_dtype(np.stack(rows), t.client_dtype, label, f"input '{t.name}' of model '{entry.name}'")


# --------------------------------------------------------------------------- loading

def load_function(function_dir: str, memory: Optional[MemoryBudget] = None) -> Function:
    """Read `function.json` in `function_dir`, load every model once and build pipelines.
    `memory`: the budget for decoded images (None: the container's memory limit minus
    what the loaded function holds, see `memory_budget`)."""
    t0 = time.perf_counter()
    function_dir = os.path.abspath(function_dir)
    path = os.path.join(function_dir, FUNCTION_FILE)
    spec = _read_spec(path, function_dir)
    serving = Serving.from_dict(spec.get("serving"))
    models_spec = spec.get("models")
    if not isinstance(models_spec, list) or not models_spec:
        raise ConfigurationError(f"{path} must list at least one model under 'models'.")
    models: dict = {}
    in_flight = RequestsInFlight()
    for i, m in enumerate(models_spec):
        if not isinstance(m, dict) or not m.get("name") or not m.get("path"):
            raise ConfigurationError(f"models[{i}] in {path} needs a 'name' and a 'path'.")
        if str(m["name"]) in models:
            raise ConfigurationError(f"model name '{m['name']}' appears twice in {path}.")
        entry = _load_model(m, spec.get("labels"), serving, function_dir, path, in_flight)
        models[entry.name] = entry
    return Function(
        name=str(spec.get("name") or next(iter(models))), models=models, in_flight=in_flight, serving=serving,
        base_dir=function_dir, load_seconds=time.perf_counter() - t0, auth=spec.get("auth") or {},
        memory=memory or MemoryBudget.for_this_process(serving),
    )


def _read_spec(path: str, function_dir: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except FileNotFoundError:
        raise ConfigurationError(f"no {FUNCTION_FILE} in {function_dir}; build the image with 'mlfn build'.") from None
    except (OSError, ValueError) as e:
        raise ConfigurationError(f"{path} cannot be read: {e}.") from None
    if not isinstance(spec, dict):
        raise ConfigurationError(f"{path} must hold a JSON object.")
    return spec


def _load_model(m: dict, default_labels, serving: Serving, function_dir: str, path: str,
                in_flight: RequestsInFlight) -> ModelEntry:
    name = str(m["name"])
    try:
        labels = m.get("labels") or default_labels
        pre = Pipeline(m.get("pre") or [], function_dir, stage=PRE, labels=labels)
        post = Pipeline(m.get("post") or [], function_dir, stage=POST, labels=labels)
    except ValueError as e:
        raise ConfigurationError(f"model '{name}' in {path}: {e}.") from None
    model_path = m["path"] if os.path.isabs(m["path"]) else os.path.join(function_dir, m["path"])
    runner = ModelRunner(path=model_path, num_threads=serving.num_threads, mode=serving.interpreter,
                         max_interpreters=serving.interpreters, name=name)
    batcher = Batcher(runner, serving.batching, max_requests=serving.workers, in_flight=in_flight)
    return ModelEntry(name=name, runner=runner, pre=pre, post=post, batcher=batcher, path=m["path"],
                      sha256=str(m.get("sha256", "")), quantization=str(m.get("quantization", "")))
