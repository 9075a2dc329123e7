"""REST vs REST over h2c vs gRPC on the function's one port (issue 15).

    python tests/runtime/make_models.py /tmp/m                    # digits_int8.tflite
    python bench/grpc_bench.py --models /tmp/m                    # digits
    python bench/grpc_bench.py --models /tmp/m --model /tmp/mobilenet_int8.tflite   # + a 224x224x3 model

Serves each model with `python -m mlfn_runtime` (a subprocess, so the clients do not share
its GIL) on loopback, and measures with keep-alive connections, per protocol, batch size
(1, 32; 1, 8 for --model) and client count (1, 8): p50/p99 latency (ms) and requests/s.
 - rest:  POST /v2/models/M/infer, JSON tensors (HTTP/1.1, http.client)
 - h2c:   the same JSON request over HTTP/2 with prior knowledge (the `h2` package)
 - grpc:  inference.GRPCInferenceService/ModelInfer with raw_input_contents (grpcio client)
 - grpcio: the same call to the alternative not taken, a grpcio (C core) server on its own
   port over the same grpc_service.call (the floor of "grpcio on an internal port behind an
   h2c proxy": the proxy hop would add to it); only with --grpcio
Prints a table; --json prints one JSON document.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "actions"))

from closed_loop import closed_loop  # noqa: E402
from function_process import serve  # noqa: E402


def function_dir(root: Path, model: Path, name: str) -> Path:
    """A function folder serving `model` with no pre/post-processing (tensors in and out)."""
    (root / "models" / name).mkdir(parents=True)
    shutil.copy(model, root / "models" / name / "model.tflite")
    spec = {"name": name, "runtime": "litert",
            "models": [{"name": name, "path": f"models/{name}/model.tflite", "pre": [], "post": []}],
            "serving": {"max_batch_size": 32, "max_payload_bytes": 64 << 20, "workers": 8}}
    (root / "function.json").write_text(json.dumps(spec))
    return root


def serve_grpcio(fdir: str, port: int) -> None:
    """(subprocess) grpcio's server answering ModelInfer with grpc_service.call."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from mlfn_runtime import grpc_service
    from mlfn_runtime.server_state import ServerState
    from mlfn_runtime.function import load_function

    state = ServerState(load_function(fdir))

    def infer(request: bytes, context):
        reply = grpc_service.call(state, "/inference.GRPCInferenceService/ModelInfer", request)
        if reply.code:
            context.abort(next(c for c in grpc.StatusCode if c.value[0] == reply.code), reply.message)
        return reply.body

    handler = grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(infer)})
    server = grpc.server(ThreadPoolExecutor(8), handlers=[handler])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def input_spec(port: int, model: str) -> tuple:
    c = http.client.HTTPConnection("127.0.0.1", port)
    c.request("GET", f"/v2/models/{model}")
    meta = json.loads(c.getresponse().read())
    return meta["inputs"][0]["name"], [int(d) for d in meta["inputs"][0]["shape"][1:]]


class RestClient:
    def __init__(self, port, model, body):
        self.conn, self.path, self.body = http.client.HTTPConnection("127.0.0.1", port), f"/v2/models/{model}/infer", body

    def __call__(self):
        self.conn.request("POST", self.path, self.body, {"Content-Type": "application/json"})
        r = self.conn.getresponse()
        assert r.status == 200, r.read()
        r.read()


class H2cClient:
    """One request at a time over one HTTP/2 connection (prior knowledge)."""

    def __init__(self, port, model, body):
        import h2.config
        import h2.connection

        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(1 << 24)
        self.sock.sendall(self.conn.data_to_send())
        self.path, self.body = f"/v2/models/{model}/infer", body

    def __call__(self):
        import h2.events

        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "bench"),
                                     (":path", self.path), ("content-type", "application/json")])
        pos = 0
        while True:
            n = min(len(self.body) - pos, self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if n:
                self.conn.send_data(sid, self.body[pos:pos + n], end_stream=pos + n == len(self.body))
                pos += n
            self.sock.sendall(self.conn.data_to_send())
            if pos == len(self.body):
                break
            if not n:
                self._pump()
        done = False
        while not done:
            for e in self._pump():
                if isinstance(e, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                if isinstance(e, h2.events.StreamEnded) and e.stream_id == sid:
                    done = True
            self.sock.sendall(self.conn.data_to_send())

    def _pump(self):
        return self.conn.receive_data(self.sock.recv(1 << 20))


class GrpcClient:
    def __init__(self, port, model, request):
        import grpc

        from mlfn_runtime.oip_grpc import RPCS

        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", [("grpc.max_receive_message_length", 64 << 20)])
        self.stub = self.channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                             request_serializer=lambda m: m.SerializeToString(),
                                             response_deserializer=RPCS["ModelInfer"][1].FromString)
        self.request = request

    def __call__(self):
        self.stub(self.request, timeout=120)


def requests_for(model, name, dims, batch) -> dict:
    from mlfn_runtime.oip_grpc import MESSAGES

    x = np.random.default_rng(0).random([batch] + dims, dtype=np.float32)
    doc = {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
    body = json.dumps(doc).encode()
    grpc_req = MESSAGES["ModelInferRequest"](model_name=model, inputs=[{"name": name, "datatype": "FP32",
                                                                      "shape": list(x.shape)}],
                                              raw_input_contents=[x.tobytes()])
    return {"rest": body, "h2c": body, "grpc": grpc_req}


def measure(make, clients: int, calls: int) -> dict:
    """p50/p99 ms and req/s of `calls` requests from each of `clients` threads (one connection each)."""
    workers = [make() for _ in range(clients)]
    for w in workers:
        for _ in range(3):
            w()  # warm-up
    r = closed_loop(workers, lambda done: done < calls)
    return {"p50_ms": round(r["p50_ms"], 2), "p99_ms": round(r["p99_ms"], 2), "rps": round(r["rps"], 1)}


def bench_model(path: Path, name: str, calls: int, batches=(1, 32), with_grpcio=False) -> list:
    tmp = Path(tempfile.mkdtemp(prefix="mlfn-grpc-bench-"))
    fdir = function_dir(tmp / name, path, name)
    proc, port = serve(fdir)
    alt = None
    if with_grpcio:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            alt_port = s.getsockname()[1]
        alt = subprocess.Popen([sys.executable, __file__, "--serve-grpcio", str(fdir), str(alt_port)],
                               env=dict(os.environ, PYTHONPATH=str(ROOT / "actions")), stderr=subprocess.DEVNULL)
        time.sleep(3)
    rows = []
    try:
        input_name, dims = input_spec(port, name)
        clients = {"rest": RestClient, "h2c": H2cClient, "grpc": GrpcClient}
        if alt is not None:
            clients["grpcio"] = lambda _port, model, req: GrpcClient(alt_port, model, req)
        for batch in batches:
            reqs = requests_for(name, input_name, dims, batch)
            for n_clients in (1, 8):
                for proto, cls in clients.items():
                    n = max(5, calls // (8 if batch > 1 else 1) // n_clients)
                    r = measure(lambda: cls(port, name, reqs["grpc" if proto == "grpcio" else proto]), n_clients, n)
                    rows.append({"model": name, "input": "x".join(map(str, dims)), "batch": batch,
                                 "clients": n_clients, "protocol": proto, **r})
                    print(f"{name:10} {rows[-1]['input']:>9} b{batch:<3} c{n_clients} {proto:5} "
                          f"p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms  {r['rps']:8.1f} req/s",
                          file=sys.stderr, flush=True)
    finally:
        for p in (proc, alt):
            if p is not None:
                p.terminate()
                p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, required=True, help="folder from tests/runtime/make_models.py")
    p.add_argument("--model", type=Path, help="another .tflite (e.g. MobileNetV2 224x224x3 int8) to bench too")
    p.add_argument("--calls", type=int, default=300, help="requests per client at batch 1 (batch 32: 1/8 of it)")
    p.add_argument("--grpcio", action="store_true", help="also the grpcio-server alternative (see above)")
    p.add_argument("--json", action="store_true")
    if sys.argv[1:2] == ["--serve-grpcio"]:
        serve_grpcio(sys.argv[2], int(sys.argv[3]))
        return 0
    args = p.parse_args()
    rows = bench_model(args.models / "digits_int8.tflite", "digits", args.calls, with_grpcio=args.grpcio)
    if args.model:
        # batch 8, not 32: 32 images of 224x224x3 are ~100 MB of JSON for the REST requests
        rows += bench_model(args.model, "big", max(20, args.calls // 10), batches=(1, 8), with_grpcio=args.grpcio)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
