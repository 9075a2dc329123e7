"""`python3 -m mlfn_runtime [--function-dir DIR] [--host H] [--port P]`: serve the function.

Defaults: the function folder from $MLFN_FUNCTION_DIR (none: code actions only), host
0.0.0.0, port $PORT or 8080 (Knative's runtime contract)."""
import os
import sys

sys.dont_write_bytecode = True  # read-only root filesystems: never write .pyc
# numpy's bundled OpenBLAS starts one thread per CPU when it is loaded; the runtime does
# no BLAS-heavy work, so one thread keeps start-up short on many-core nodes.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        function_dir, host, port = _parse(argv)
    else:  # the image's CMD: no flags, so no argparse import on the cold-start path
        function_dir = os.environ.get("MLFN_FUNCTION_DIR")
        host = os.environ.get("MLFN_HOST", "0.0.0.0")
        port = _env_port()

    from mlfn_runtime.errors import RuntimeFunctionError
    from mlfn_runtime import serve
    from mlfn_runtime.runtime_log import log

    if port is None:
        log(f"error: PORT is {os.environ.get('PORT')!r}; set it to a port number (0-65535) or unset it for 8080")
        return 2

    try:
        return serve(function_dir, host, port)
    except RuntimeFunctionError as e:
        log(f"error: {e}")
        return 2
    except OSError as e:
        log(f"error: cannot listen on {host}:{port}: {e.strerror}")
        return 2


def _parse(argv):
    import argparse

    parser = argparse.ArgumentParser(
        prog="python3 -m mlfn_runtime",
        description="Serve an mlfn function: OpenWhisk /init + /run, POST /predict, Open Inference "
                    "Protocol v2, TensorFlow Serving REST, /metrics and /healthz on one port.",
        epilog="Example: MLFN_FUNCTION_DIR=/opt/mlfn/function PORT=8080 python3 -m mlfn_runtime",
    )
    parser.add_argument("--function-dir", default=os.environ.get("MLFN_FUNCTION_DIR"),
                        help="folder holding function.json (default: $MLFN_FUNCTION_DIR)")
    parser.add_argument("--host", default=os.environ.get("MLFN_HOST", "0.0.0.0"), help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=None, help="port (default: $PORT or 8080)")
    args = parser.parse_args(argv)
    port = args.port if args.port is not None else _env_port()
    return args.function_dir, args.host, port


def _env_port():
    """$PORT (Knative's runtime contract), 8080 when unset; None when it is not a port."""
    value = (os.environ.get("PORT") or "").strip()
    if not value:
        return 8080
    return int(value) if value.isdigit() and int(value) <= 65535 else None


if __name__ == "__main__":
    sys.exit(main())
