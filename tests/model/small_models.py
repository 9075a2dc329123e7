"""Small untrained Keras models mlfn's sample does not cover, built once per session
(a few seconds): import the `small_models` fixture into a test module to use them.

    small_models / "cnn_softmax.keras"   (N, 32, 32, 3) -> Dense(5, softmax), BatchNorm after ReLU
    small_models / "cnn_softmax"         the same model as a SavedModel
    small_models / "cnn_logits.keras"    (N, 32, 32, 3) -> Dense(5) logits
    small_models / "two.keras", "two"    inputs a (N, 4) and b (N, 3) -> Dense(2, softmax)
    small_models / "rescaled.keras"      (N, 28, 28, 1) -> Rescaling(1/255) -> Dense(3) -> Softmax layer
    small_models / "binary.h5"           (N, 16, 16, 3) -> Dense(1, sigmoid), HDF5
    small_models / "reg.keras"           (N, 7) -> Dense(1), trained a little; reg_val.npz (x, y)
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import pytest


def build_small_models(folder: Path) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)

    def cnn(activation):
        i = keras.Input((32, 32, 3), name="image")
        x = layers.Conv2D(8, 3, activation="relu")(i)
        x = layers.BatchNormalization()(x)
        x = layers.GlobalAveragePooling2D()(x)
        return keras.Model(i, layers.Dense(5, activation=activation)(x))

    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):
        softmax = cnn("softmax")
        softmax.save(folder / "cnn_softmax.keras")
        softmax.export(str(folder / "cnn_softmax"))
        cnn(None).save(folder / "cnn_logits.keras")
        a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
        two = keras.Model([a, b], layers.Dense(2, activation="softmax")(layers.Concatenate()([a, b])))
        two.save(folder / "two.keras")
        two.export(str(folder / "two"))
        i = keras.Input((28, 28, 1), name="pixels")
        x = layers.Flatten()(layers.Rescaling(1 / 255)(i))
        keras.Model(i, layers.Softmax()(layers.Dense(3)(x))).save(folder / "rescaled.keras")
        binary = keras.Sequential([keras.Input((16, 16, 3)), layers.Flatten(), layers.Dense(1, activation="sigmoid")])
        binary.save(folder / "binary.h5")
        reg = keras.Sequential([keras.Input((7,)), layers.Dense(16, activation="relu"), layers.Dense(1)])
        reg.compile("adam", "mse")
        rng = np.random.default_rng(0)
        x = rng.random((256, 7)).astype("float32")
        y = x.sum(axis=1, keepdims=True).astype("float32")
        reg.fit(x, y, epochs=5, verbose=0)
        reg.save(folder / "reg.keras")
    np.savez(folder / "reg_val.npz", x=x[:64], y=y[:64])
    np.save(folder / "reg_cal.npy", x[64:128])
    return folder


_BUILT: dict = {}


@pytest.fixture(scope="session")
def small_models(tmp_path_factory) -> Path:
    # imported into several test modules: each import is its own fixture, so build once here
    if "folder" not in _BUILT:
        _BUILT["folder"] = build_small_models(tmp_path_factory.mktemp("small-models"))
    return _BUILT["folder"]
