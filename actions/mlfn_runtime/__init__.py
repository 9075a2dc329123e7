"""mlfn_runtime: the code inside every function image (see actions/README.md).

Public entry points (nothing heavy is imported here: start-up is on the critical path of
every cold start):
    mlfn_runtime.serve(function_dir, host, port)            serve until SIGTERM, exit 0
    mlfn_runtime.make_server(function_dir, host, port)      a bound server (serve_forever)
    mlfn_runtime.function.load_function(dir) -> Function    the data plane
    mlfn_runtime.activation                                 what code actions read
Module layout: data plane (function, request_items, tensors, serving, interpreter,
pipeline + step modules), protocols (whisk_action, code_action, predict_route, oip,
tfserving, probes), HTTP (routes, http_server, request_body, connections, http_messages,
server_state), and metrics,
errors, runtime_log, router (the weighted pick of OpenWhisk alias conductors)."""

from mlfn_runtime.version import VERSION as __version__  # noqa: E402,F401


def serve(function_dir=None, host: str = "0.0.0.0", port: int = 8080) -> int:
    """Load the function in `function_dir` (None: code actions only), serve until
    SIGTERM/SIGINT, let in-flight requests finish, return 0."""
    from mlfn_runtime.http_server import serve as _serve

    return _serve(function_dir, host, port)


def make_server(function_dir=None, host: str = "0.0.0.0", port: int = 8080, function=None):
    """Load the function and bind the server without serving: call `serve_forever()`,
    then `shutdown()`, `drain()` and `server_close()`. `function`: an already loaded one."""
    from mlfn_runtime.http_server import make_server as _make_server

    return _make_server(function_dir, host, port, function=function)
