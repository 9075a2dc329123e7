"""pytest plugin (loaded by tests/conftest.py): the digits sample, trained once per session.

- `digits_project`: Path to a temporary copy of samples/digits with model.keras, model/
  (SavedModel), calibration.npy and validation.npz trained into it.
- `digits_tflite`: the `mlfn.model.QuantizeResult` of its int8 conversion (the model file
  is `digits_tflite.tflite_path`).
Other areas' tests (build, runtime, deploy) depend on these names and types.
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "digits"
TRAINED = ("model.keras", "model", "model.tflite", "calibration.npy", "validation.npz", ".mlfn")


def copy_sample(dest: Path) -> Path:
    """samples/digits without trained artifacts or caches."""
    shutil.copytree(SAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", *TRAINED))
    return dest


def _train_module():
    spec = importlib.util.spec_from_file_location("mlfn_sample_digits_train", SAMPLE / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def digits_project(tmp_path_factory) -> Path:
    project = copy_sample(tmp_path_factory.mktemp("digits") / "digits")
    _train_module().train(project, seed=0)
    return project


@pytest.fixture(scope="session")
def validation_digits(digits_project) -> tuple:
    """(x, y) of the sample's held-out digits: x as float32 (n, 8, 8) in 0..1, y as int labels."""
    import numpy as np

    d = np.load(digits_project / "validation.npz")
    x, y = d[d.files[0]], d[d.files[1]]
    x = x.reshape(len(x), 8, 8).astype(np.float32)
    return (x / 16.0 if x.max() > 1.5 else x), y.astype(int)  # dataset units 0..16 -> 0..1


@pytest.fixture(scope="session")
def validation_png(validation_digits) -> bytes:
    """The first held-out digit of the sample as a PNG file (pixel = round(x * 255))."""
    from tests.runtime.conftest import digit_png

    return digit_png(validation_digits[0][0])


@pytest.fixture(scope="session")
def digits_tflite(digits_project):
    from mlfn.config import load_config
    from mlfn.model import quantize_model

    cfg = load_config(str(digits_project))
    return quantize_model(cfg, mode="int8")
