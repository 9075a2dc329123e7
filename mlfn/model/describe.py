"""What a model file says about itself, read without running it: its inputs, its outputs
and the activation of its (first) output.

    facts = describe_model(Path("model.keras"))
    facts.inputs             # [InputSpec("image", (96, 96, 3), "float32")]
    facts.output_activation  # "softmax" | "sigmoid" | None (linear / logits / unknown)

`.keras` and `.h5` are read from their JSON model config (no TensorFlow), `.tflite` with
the LiteRT interpreter, a SavedModel from its `saved_model.pb` signature and function
graph (TensorFlow's protobuf classes, so TensorFlow is imported). `mlfn init` suggests a
pipeline from these facts, and `mlfn build` checks the staged pipeline against them.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from mlfn.errors import ModelError
from mlfn.model.data import InputSpec

# Keras activations and TF/TFLite ops that make scores probabilities.
_ACTIVATIONS = {"softmax": "softmax", "sigmoid": "sigmoid", "Softmax": "softmax", "Sigmoid": "sigmoid",
                "SOFTMAX": "softmax", "LOGISTIC": "sigmoid"}
_TF_PASS = {"Identity", "IdentityN"}
_TF_CALLS = {"StatefulPartitionedCall", "PartitionedCall"}
_TFLITE_PASS = {"DEQUANTIZE", "QUANTIZE", "RESHAPE"}
_RESCALING = {"Rescaling", "Normalization"}
_MINUS_ONE_TO_ONE = ("mobilenet", "inception_v3", "xception", "nasnet", "inception_resnet_v2")


@dataclass
class ModelFacts:
    inputs: list  # [InputSpec]; shape without the batch dimension, None for unknown sizes
    outputs: list = field(default_factory=list)  # [(name, shape without batch)]
    output_activation: Optional[str] = None  # "softmax" | "sigmoid" | None
    rescales_input: bool = False  # the model scales pixels itself (a Keras Rescaling/Normalization layer)
    input_range: Optional[tuple] = None  # pixel range a known architecture was trained on, e.g. (-1.0, 1.0)

    @property
    def classes(self) -> Optional[int]:
        """Size of the first output's last dimension (a classifier's class count)."""
        if not self.outputs or not self.outputs[0][1]:
            return None
        return self.outputs[0][1][-1]


def describe_model(path: Path, signature: str = "serving_default") -> ModelFacts:
    """The facts of a local model file or SavedModel folder; ModelError when unreadable."""
    path = Path(path)
    if path.is_dir():
        return _saved_model(path, signature)
    suffix = path.suffix.lower()
    if suffix == ".keras":
        try:
            with zipfile.ZipFile(path) as z:
                conf = json.loads(z.read("config.json"))
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError):
            raise ModelError(f"{path} is not a Keras model archive (a .keras file is a zip with config.json); "
                             "save the model with model.save('model.keras').") from None
        return _keras(conf)
    if suffix in (".h5", ".hdf5"):
        return _keras(_h5_config(path))
    if suffix == ".tflite":
        return _tflite(path.read_bytes(), str(path))
    raise ModelError(f"{path} is not a SavedModel folder, .keras, .h5 or .tflite file.")


# ---- Keras (config.json of .keras, model_config of .h5)

def _h5_config(path: Path) -> dict:
    try:
        import h5py

        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except (ImportError, OSError):
        raw = None
    if raw is None:
        raise ModelError(f"{path} is not a Keras HDF5 model (no model_config); save it with model.save('model.h5').")
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def _layer_refs(refs) -> list:
    """Keras' input_layers/output_layers: [name, node, tensor] or a list of those."""
    if not refs:
        return []
    return [refs[0]] if isinstance(refs[0], str) else [r[0] for r in refs]


def _keras(conf: dict) -> ModelFacts:
    model = conf.get("config", {})
    layers = model.get("layers", [])
    by_name = {layer.get("config", {}).get("name"): layer for layer in layers}
    names = _layer_refs(model.get("input_layers")) or [
        layer["config"].get("name") for layer in layers if layer.get("class_name") == "InputLayer"]
    inputs = []
    for name in names:
        lc = by_name.get(name, {}).get("config", {})
        shape = lc.get("batch_shape") or lc.get("batch_input_shape")
        if shape is None and model.get("build_input_shape"):
            shape = model["build_input_shape"]
        inputs.append(InputSpec(name or "input", tuple(shape[1:]) if shape else (), lc.get("dtype") or "float32"))
    if not inputs and model.get("build_input_shape"):
        inputs.append(InputSpec("input", tuple(model["build_input_shape"][1:]), "float32"))
    outs = _layer_refs(model.get("output_layers")) or ([layers[-1]["config"].get("name")] if layers else [])
    last = by_name.get(outs[0]) if outs else None
    return ModelFacts(inputs=inputs, outputs=[(n, _keras_units(by_name.get(n))) for n in outs],
                      output_activation=_keras_activation(last), rescales_input=_rescales(layers),
                      input_range=_application_range(conf))


def _application_range(conf: dict) -> Optional[tuple]:
    """(-1, 1) for keras.applications architectures whose preprocess_input scales pixels to
    [-1, 1] (MobileNet, MobileNetV2, InceptionV3, Xception, NASNet), found by the model's
    name or that of a model nested in it (transfer learning)."""
    name = str(conf.get("config", {}).get("name", "")).lower()
    if name.startswith(_MINUS_ONE_TO_ONE):
        return (-1.0, 1.0)
    for layer in conf.get("config", {}).get("layers", []):
        if layer.get("class_name") in ("Functional", "Sequential", "Model"):
            found = _application_range(layer)
            if found:
                return found
    return None


def _rescales(layers: list) -> bool:
    """True when the model (or a model nested in it) has a Rescaling or Normalization layer."""
    for layer in layers:
        if layer.get("class_name") in _RESCALING:
            return True
        if layer.get("class_name") in ("Functional", "Sequential", "Model") and _rescales(
                layer.get("config", {}).get("layers", [])):
            return True
    return False


def _keras_units(layer: Optional[dict]) -> tuple:
    conf = (layer or {}).get("config", {})
    units = conf.get("units")
    return (units,) if isinstance(units, int) else ()


def _keras_activation(layer: Optional[dict]) -> Optional[str]:
    if not layer:
        return None
    if layer.get("class_name") in ("Functional", "Sequential", "Model"):  # a nested model: its last layer
        return _keras(layer).output_activation
    if layer.get("class_name") in ("Softmax", "Sigmoid"):
        return _ACTIVATIONS[layer["class_name"]]
    act = layer.get("config", {}).get("activation")
    if isinstance(act, dict):  # a serialized activation object
        act = act.get("config", {}).get("name") or act.get("class_name")
    return _ACTIVATIONS.get(act) if isinstance(act, str) else None


# ---- TFLite

def _tflite(content: bytes, where: str) -> ModelFacts:
    from mlfn.model import litert

    litert.check_tflite(content, where)
    it = litert.interpreter(content, delegates=False)
    inputs = [InputSpec(_tensor_name(d["name"]), tuple(int(x) if x > 0 else None for x in d["shape_signature"][1:]),
                        d["dtype"].__name__) for d in it.get_input_details()]
    outs = it.get_output_details()
    outputs = [(d["name"], tuple(int(x) if x > 0 else None for x in d["shape_signature"][1:])) for d in outs]
    producer = {}
    for op in it._get_ops_details():  # the same data the TFLite analyzer reads
        for t in op.get("outputs", []):
            producer[int(t)] = op
    activation, tensor = None, outs[0]["index"] if outs else None
    for _ in range(8):
        op = producer.get(tensor)
        if op is None:
            break
        if op["op_name"] in _TFLITE_PASS and len(op.get("inputs", [])):
            tensor = int(op["inputs"][0])
            continue
        activation = _ACTIVATIONS.get(op["op_name"])
        break
    return ModelFacts(inputs=inputs, outputs=outputs, output_activation=activation)


def _tensor_name(name: str) -> str:
    """`serving_default_image:0` -> `image`, the name the model's author gave the input."""
    name = name.split(":")[0]
    return name[len("serving_default_"):] if name.startswith("serving_default_") else name


# ---- SavedModel

def _saved_model(folder: Path, signature: str) -> ModelFacts:
    pb = folder / "saved_model.pb"
    if not pb.is_file():
        raise ModelError(f"{folder} is a folder without saved_model.pb, so it is not a TensorFlow SavedModel.")
    from mlfn.model.load import import_tf

    import_tf()
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString(pb.read_bytes())
    except Exception:
        raise ModelError(f"{pb} cannot be parsed; it is not a SavedModel protocol buffer.") from None
    graph = next((mg for mg in saved.meta_graphs if signature in mg.signature_def), None)
    if graph is None:
        sigs = sorted({k for mg in saved.meta_graphs for k in mg.signature_def if not k.startswith("__")})
        raise ModelError(f"SavedModel {folder} has no signature '{signature}'; set model.signature to one of: "
                         f"{', '.join(sigs) or '(none)'}.")
    sig = graph.signature_def[signature]

    def dims(info) -> tuple:
        d = [x.size for x in info.tensor_shape.dim][1:]
        return tuple(None if x < 0 else int(x) for x in d)

    from tensorflow.python.framework import dtypes

    inputs = [InputSpec(k, dims(v), dtypes.as_dtype(v.dtype).name) for k, v in sorted(sig.inputs.items())]
    outputs = [(k, dims(v)) for k, v in sorted(sig.outputs.items())]
    first = sorted(sig.outputs.items())[0][1].name if sig.outputs else None
    return ModelFacts(inputs=inputs, outputs=outputs, output_activation=_graph_activation(graph, first))


def _graph_activation(graph, tensor: Optional[str]) -> Optional[str]:
    """Follow the signature's output through Identity ops and function calls to the op
    that computes it."""
    if tensor is None:
        return None
    functions = {f.signature.name: f for f in graph.graph_def.library.function}
    scope = {n.name: n for n in graph.graph_def.node}
    for _ in range(200):
        parts = tensor.lstrip("^").split(":")
        node = scope.get(parts[0])
        if node is None:
            return None
        index = int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 0
        if node.op in _TF_PASS:
            tensor = node.input[index if node.op == "IdentityN" else 0]
        elif node.op in _TF_CALLS and node.attr["f"].func.name in functions:
            fn = functions[node.attr["f"].func.name]
            scope = {n.name: n for n in fn.node_def}
            tensor = fn.ret[fn.signature.output_arg[index].name]
        else:
            return _ACTIVATIONS.get(node.op)
    return None
