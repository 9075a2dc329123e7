"""A digits model that plain int8 cannot quantize: a few outlier weights.

The network is the sample's kind of CNN with two more Dense layers before the logits,
"narrow" (32 units) and "mix" (64 units). After training, three of narrow's channels are
divided by `factor` and mix's weights that read them multiplied by it: the float model
computes exactly the same function (ReLU commutes with a positive scale), but each of
mix's output channels now has three huge weights, so the one int8 scale per channel rounds
its other 29 weights to nothing. Plain int8 and dynamic-range quantization lose many
accuracy points; float16 does not; keeping mix (and what feeds it) in float
(quantize.mode int8-selective) repairs int8 at a cost of a few KB. Used by
tests/model/test_auto.py and bench/quantize_bench.py.

    python samples/digits/outliers.py OUT_DIR

writes model.keras, calibration.npy and validation.npz into OUT_DIR (a few seconds).
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTLIER_CHANNELS = (0, 1, 2)


def _load_split(seed: int):
    spec = importlib.util.spec_from_file_location("mlfn_digits_train", HERE / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_split(seed)


def train_outlier_model(out_dir: Path, seed: int = 0, factor: float = 1000.0, epochs: int = 15) -> dict:
    """Train, plant the outlier weights, save; return the paths and both accuracies (%)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    from keras import layers

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    x_train, y_train, x_val, y_val = _load_split(seed)
    inputs = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.Flatten()(layers.MaxPooling2D(2)(x))
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dense(32, activation="relu", name="narrow")(x)
    x = layers.Dense(64, activation="relu", name="mix")(x)
    model = keras.Model(inputs, layers.Dense(10, name="logits")(x), name="digits_outliers")
    model.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
    before = model.evaluate(x_val, y_val, verbose=0)[1] * 100.0
    narrow, mix = model.get_layer("narrow"), model.get_layer("mix")
    w, b = narrow.get_weights()
    w2, b2 = mix.get_weights()
    ch = list(OUTLIER_CHANNELS)
    w[:, ch] /= factor
    b[ch] /= factor
    w2[ch, :] *= factor
    narrow.set_weights([w, b])
    mix.set_weights([w2, b2])
    after = model.evaluate(x_val, y_val, verbose=0)[1] * 100.0
    paths = {"keras": out_dir / "model.keras", "calibration": out_dir / "calibration.npy",
             "validation": out_dir / "validation.npz"}
    model.save(paths["keras"])
    np.save(paths["calibration"], x_train[:200])
    np.savez(paths["validation"], x=x_val, y=y_val)
    return {**paths, "accuracy_before": before, "accuracy": after}


if __name__ == "__main__":
    result = train_outlier_model(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "outliers")
    print(f"held-out accuracy {result['accuracy_before']:.2f}% before, {result['accuracy']:.2f}% after "
          "planting the outlier weights", file=sys.stderr)
