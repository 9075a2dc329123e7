"""mlfn: turn a trained TensorFlow/Keras model into a small, fast serverless function."""

__version__ = "0.1.0"
