"""mlfn_runtime: the code inside every function image (see actions/README.md)."""
