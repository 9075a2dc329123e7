"""Train the digits sample: a tiny Keras CNN on scikit-learn's 8x8 handwritten digits.

The model takes (8, 8, 1) float32 images scaled to 0..1 (pixel / 16 in the dataset; a PNG
pixel / 255 for the files in inputs/) and returns 10 logits; the function's
post-processing applies softmax and top_k. It has a BatchNormalization and a Dropout
layer on purpose, so `mlfn quantize` can show them folded and removed.

    python samples/digits/train.py [OUT_DIR]      # default: this folder

writes model.keras, model/ (a SavedModel, signature serving_default), calibration.npy
(representative inputs from the training split) and validation.npz (held-out x, y).
Training is deterministic for a given seed and takes a few seconds on 2 cores.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CALIBRATION_SAMPLES = 200


def load_split(seed: int = 0):
    """(x_train, y_train, x_val, y_val): x float32 (N, 8, 8, 1) in 0..1, y int64 labels."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype("float32") / 16.0)[..., None]
    y = digits.target.astype("int64")
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y
    )
    return (np.ascontiguousarray(x_train), y_train, np.ascontiguousarray(x_val), y_val)


def build_model():
    import keras
    from keras import layers

    inputs = keras.Input(shape=(8, 8, 1), dtype="float32", name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Dense(128, activation="relu")(x)
    outputs = layers.Dense(10, name="logits")(x)  # logits: softmax is a post-processing step
    return keras.Model(inputs, outputs, name="digits")


def train(out_dir: Path = HERE, seed: int = 0, epochs: int = 20, verbose: int = 0) -> dict:
    """Train and save the model and its data files into `out_dir`; return their paths.

    Keys: keras, saved_model, calibration, validation (Paths) and accuracy (float, the
    Keras model's top-1 accuracy on the held-out split)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import keras
    import tensorflow as tf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # pragma: no cover - older TF
        pass

    x_train, y_train, x_val, y_val = load_split(seed)
    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, batch_size=32, epochs=epochs, shuffle=True, verbose=verbose)
    _, accuracy = model.evaluate(x_val, y_val, verbose=0)

    paths = {
        "keras": out_dir / "model.keras",
        "saved_model": out_dir / "model",
        "calibration": out_dir / "calibration.npy",
        "validation": out_dir / "validation.npz",
    }
    model.save(paths["keras"])
    model.export(str(paths["saved_model"]), format="tf_saved_model", verbose=False)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(x_train), size=min(CALIBRATION_SAMPLES, len(x_train)), replace=False)
    np.save(paths["calibration"], x_train[np.sort(idx)])
    np.savez(paths["validation"], x=x_val, y=y_val)
    return {**paths, "accuracy": float(accuracy)}


def write_inputs(inputs_dir: Path = HERE / "inputs", seed: int = 0, labels=(0, 3, 4, 7, 9)) -> list:
    """Write held-out digits as 8x8 grayscale PNGs named by label (pixel = round(x*255/16)),
    and digit-3.json, a tensor request {"inputs": [...]} with shape (1, 8, 8, 1)."""
    import numpy as np
    from PIL import Image

    inputs_dir = Path(inputs_dir)
    inputs_dir.mkdir(parents=True, exist_ok=True)
    _, _, x_val, y_val = load_split(seed)
    written = []
    for label in labels:
        i = int(np.flatnonzero(y_val == label)[0])
        pixels = np.round(x_val[i, :, :, 0] * 255.0).astype("uint8")  # x is already /16
        path = inputs_dir / f"digit-{label}.png"
        Image.fromarray(pixels, mode="L").save(path)
        written.append(path)
        if label == 3:
            tensor = (pixels.astype("float64") / 255.0).reshape(1, 8, 8, 1)
            body = {"inputs": np.round(tensor, 6).tolist()}
            (inputs_dir / "digit-3.json").write_text(json.dumps(body) + "\n")
            written.append(inputs_dir / "digit-3.json")
    return written


if __name__ == "__main__":
    import time

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    t0 = time.monotonic()
    result = train(out, verbose=2 if "-v" in sys.argv[2:] else 0)
    print(f"trained in {time.monotonic() - t0:.1f} s; held-out accuracy: {result['accuracy']:.4f}", file=sys.stderr)
    for key in ("keras", "saved_model", "calibration", "validation"):
        print(result[key])
