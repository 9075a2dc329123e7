"""Tiny .tflite models for the runtime tests, built with TensorFlow in a subprocess so
the test process itself never imports TensorFlow (like the function image).

    python tests/runtime/make_models.py OUT_DIR [--bench] [--mobilenet]

Writes:
- digits_float.tflite: [N,8,8,1] float32 -> [N,10] logits (a logistic regression trained
  with scikit-learn on load_digits/16, its weights put in a Keras Dense layer)
- digits_int8.tflite: the same, full-integer int8 with int8 input and output tensors
- digits_fixed_batch.tflite: the float model with a batch dimension fixed to 1
- two_io.tflite: inputs a [N,3], b [N,3] float32 -> outputs a+b and a*b
- digits.npz: x (N,8,8) floats 0..1, y labels
- with --bench, conv.tflite: 4 conv layers at 96x96x3 (random weights), a compute-heavy
  model for bench/runtime_bench.py --runner-model
- with --mobilenet, mobilenetv2_int8.tflite: MobileNetV2(weights=None, 224x224x3), int8
  weights and activations with float32 input and output (calibrated on random data), for
  bench/batching_bench.py and bench/grpc_bench.py --model
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(out, bench=False, mobilenet=False):
    import numpy as np
    import tensorflow as tf
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    os.makedirs(out, exist_ok=True)
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    clf = LogisticRegression(max_iter=300).fit(x, d.target)
    np.savez(os.path.join(out, "digits.npz"), x=x.reshape(-1, 8, 8), y=d.target)

    inp = tf.keras.Input((8, 8, 1), name="pixels")
    dense = tf.keras.layers.Dense(10, name="logits")
    model = tf.keras.Model(inp, dense(tf.keras.layers.Flatten()(inp)))
    dense.set_weights([clf.coef_.T.astype(np.float32), clf.intercept_.astype(np.float32)])

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    with open(os.path.join(out, "digits_float.tflite"), "wb") as f:
        f.write(conv.convert())

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i].reshape(1, 8, 8, 1)] for i in range(200))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with open(os.path.join(out, "digits_int8.tflite"), "wb") as f:
        f.write(conv.convert())

    # a fixed batch of 1 (Flatten becomes a Reshape to [1, 64]): batches fall back to one call per row
    inp1 = tf.keras.Input((8, 8, 1), batch_size=1, name="pixels")
    fixed = tf.keras.Model(inp1, dense(tf.keras.layers.Reshape((64,))(inp1)))
    with open(os.path.join(out, "digits_fixed_batch.tflite"), "wb") as f:
        f.write(tf.lite.TFLiteConverter.from_keras_model(fixed).convert())

    a = tf.keras.Input((3,), name="a")
    b = tf.keras.Input((3,), name="b")
    two = tf.keras.Model([a, b], [tf.keras.layers.Add(name="sum")([a, b]), tf.keras.layers.Multiply(name="product")([a, b])])
    conv = tf.lite.TFLiteConverter.from_keras_model(two)
    with open(os.path.join(out, "two_io.tflite"), "wb") as f:
        f.write(conv.convert())


    if bench:
        layers = [tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu") for _ in range(4)]
        conv = tf.keras.Sequential([tf.keras.Input((96, 96, 3))] + layers
                                   + [tf.keras.layers.GlobalAveragePooling2D(), tf.keras.layers.Dense(10)])
        with open(os.path.join(out, "conv.tflite"), "wb") as f:
            f.write(tf.lite.TFLiteConverter.from_keras_model(conv).convert())

    if mobilenet:
        write_mobilenet(os.path.join(out, "mobilenetv2_int8.tflite"))


def write_mobilenet(path):
    import numpy as np
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    rng = np.random.default_rng(0)
    calibration = rng.uniform(-1, 1, size=(8, 1, 224, 224, 3)).astype(np.float32)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x] for x in calibration)
    with open(path, "wb") as f:
        f.write(conv.convert())


if __name__ == "__main__":
    main(sys.argv[1], bench="--bench" in sys.argv[2:], mobilenet="--mobilenet" in sys.argv[2:])
