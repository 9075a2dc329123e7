"""The LiteRT model runner: quantization, batching, concurrency modes, input checks."""
import threading

import numpy as np
import pytest

from mlfn_runtime.errors import ConfigurationError, InvalidInput
from mlfn_runtime.interpreter import ModelRunner


def test_float_and_int8_models_agree_and_are_accurate(rt_models, digits):
    x, y = digits
    batch = x[:300, :, :, None]
    f = ModelRunner(str(rt_models / "digits_float.tflite"))
    q = ModelRunner(str(rt_models / "digits_int8.tflite"))
    assert q.inputs[0].quantized and q.inputs[0].dtype == np.int8 and q.inputs[0].client_dtype == np.float32
    assert q.inputs[0].datatype == "FP32" and q.outputs[0].quantized
    assert f.input_names == ["pixels"] and f.inputs[0].shape == (-1, 8, 8, 1)
    yf = f.predict(batch)["output_0"]
    yq = q.predict(batch)["output_0"]
    assert yq.dtype == np.float32  # dequantized with the output's own scale/zero point
    assert (yf.argmax(1) == y[:300]).mean() > 0.95
    assert (yq.argmax(1) == yf.argmax(1)).mean() > 0.97
    assert np.abs(yq - yf).max() < 1.0  # logits close: quantization in/out is right


def test_int8_input_passes_through_when_already_quantized(rt_models, digits):
    x, _ = digits
    q = ModelRunner(str(rt_models / "digits_int8.tflite"))
    t = q.inputs[0]
    xi = np.clip(np.rint(x[:4, :, :, None] / t.scale) + t.zero_point, -128, 127).astype(np.int8)
    assert np.allclose(q.predict(xi)["output_0"], q.predict(x[:4, :, :, None])["output_0"])


def test_batches_of_different_sizes_match_single_rows(rt_models, digits):
    x, _ = digits
    r = ModelRunner(str(rt_models / "digits_float.tflite"))
    rows = np.concatenate([r.predict(x[i:i + 1, :, :, None])["output_0"] for i in range(9)])
    for n in (9, 3, 1, 9):
        out = r.predict(x[:n, :, :, None])["output_0"]
        assert out.shape == (n, 10) and np.allclose(out, rows[:n], atol=1e-5)


def test_multi_input_multi_output_by_name_and_alias(rt_models):
    r = ModelRunner(str(rt_models / "two_io.tflite"))
    assert r.input_names == ["a", "b"] and r.output_names == ["output_0", "output_1"]
    out = r.predict({"a": np.ones((2, 3)), "serving_default_b:0": np.full((2, 3), 2.0)})
    assert sorted(out) == ["output_0", "output_1"]
    assert {float(out["output_0"][0, 0]), float(out["output_1"][0, 0])} == {3.0, 2.0}
    with pytest.raises(InvalidInput, match="needs input 'b'"):
        r.predict({"a": np.ones((1, 3))})
    with pytest.raises(InvalidInput, match="same batch size"):
        r.predict({"a": np.ones((1, 3)), "b": np.ones((2, 3))})


def test_bad_inputs_are_invalid_input(rt_models):
    r = ModelRunner(str(rt_models / "digits_float.tflite"))
    with pytest.raises(InvalidInput, match=r"must have shape \[N, 8, 8, 1\], got \[1, 8, 8\]"):
        r.predict(np.zeros((1, 8, 8)))
    bad = np.zeros((1, 8, 8, 1))
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(InvalidInput, match="NaN or infinite"):
        r.predict(bad)
    with pytest.raises(InvalidInput, match="must be numeric"):
        r.predict(np.array([[[["x"] * 1] * 8] * 8]))
    assert r.predict(np.zeros((1, 8, 8, 1)))["output_0"].shape == (1, 10)  # still serving


@pytest.mark.parametrize("mode", ["lock", "per-thread"])
def test_concurrent_predictions_are_correct(rt_models, digits, mode):
    x, _ = digits
    r = ModelRunner(str(rt_models / "digits_float.tflite"), mode=mode, max_interpreters=4)
    expected = r.predict(x[:64, :, :, None])["output_0"]
    errors = []

    def worker(k):
        for j in range(30):
            n = 1 + (k + j) % 8
            start = (k * 7 + j) % 50
            got = r.predict(x[start:start + n, :, :, None])["output_0"]
            if not np.allclose(got, expected[start:start + n], atol=1e-5):
                errors.append((k, j))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert r.interpreters <= 4


def test_per_thread_pool_gives_each_caller_its_own_interpreter_up_to_the_limit(rt_models):
    r = ModelRunner(str(rt_models / "digits_float.tflite"), mode="per-thread", max_interpreters=3)
    leases = [r.lease() for _ in range(3)]
    slots = [lease.__enter__() for lease in leases]
    assert len({id(s.interpreter) for s in slots}) == 3 and r.interpreters == 3
    got = []

    def fourth():
        with r.lease() as slot:
            got.append(slot)

    waiter = threading.Thread(target=fourth)
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # the 4th caller waits for a free interpreter
    leases[1].__exit__(None, None, None)
    waiter.join(5)
    assert got == [slots[1]] and r.interpreters == 3


def test_unreadable_model_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot be read"):
        ModelRunner(str(tmp_path / "missing.tflite"))
    (tmp_path / "bad.tflite").write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ConfigurationError, match="cannot be loaded by LiteRT"):
        ModelRunner(str(tmp_path / "bad.tflite"))
    with pytest.raises(ConfigurationError, match="choose lock or per-thread"):
        ModelRunner(str(tmp_path / "bad.tflite"), mode="pool")


def test_falls_back_to_tflite_runtime_when_ai_edge_litert_is_missing(monkeypatch, rt_models):
    """The legacy import path: tflite_runtime.interpreter.Interpreter (stood in for by LiteRT's)."""
    import sys
    import types

    from ai_edge_litert.interpreter import Interpreter

    from mlfn_runtime import interpreter

    legacy = types.ModuleType("tflite_runtime.interpreter")
    legacy.Interpreter = type("LegacyInterpreter", (Interpreter,), {})
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import fails
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", legacy)
    assert interpreter.interpreter_class() is legacy.Interpreter
    r = ModelRunner(str(rt_models / "digits_float.tflite"))
    with r.lease() as slot:
        assert type(slot.interpreter).__name__ == "LegacyInterpreter"
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    with pytest.raises(ConfigurationError, match="No LiteRT interpreter is installed"):
        interpreter.interpreter_class()


def test_fixed_batch_model_runs_batches_row_by_row(rt_models, digits):
    x, _ = digits
    fixed = ModelRunner(str(rt_models / "digits_fixed_batch.tflite"))
    free = ModelRunner(str(rt_models / "digits_float.tflite"))
    assert fixed.inputs[0].shape == (-1, 8, 8, 1)  # clients may send any batch size
    out = fixed.predict(x[:5, :, :, None])["output_0"]
    assert out.shape == (5, 10) and np.allclose(out, free.predict(x[:5, :, :, None])["output_0"], atol=1e-5)
    with fixed.lease() as slot:
        assert slot.resizable is False  # remembered: no second resize attempt
    assert np.allclose(fixed.predict(x[5:6, :, :, None])["output_0"], free.predict(x[5:6, :, :, None])["output_0"], atol=1e-5)
