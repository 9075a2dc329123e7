"""The reference for bench/overhead_bench.py: the digits function as a plain stdlib server.

    python3 plain_server.py [FUNCTION_DIR] [PORT]      # inside the function image

POST /predict with a PNG body (Content-Type: image/png) answers what mlfn's /predict answers
for the digits sample: decode, grayscale, 8x8, x/255, the interpreter, softmax, top 3 with
labels. ThreadingHTTPServer, keep-alive, TCP_NODELAY, one LiteRT interpreter per thread.
No limits, auth, metrics, logging or other protocols: that is the point."""
import io, json, os, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

FUNCTION_DIR = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MLFN_FUNCTION_DIR", "/opt/mlfn/function")
SPEC = json.load(open(os.path.join(FUNCTION_DIR, "function.json")))["models"][0]
MODEL = open(os.path.join(FUNCTION_DIR, SPEC["path"]), "rb").read()
LABELS = open(os.path.join(FUNCTION_DIR, "labels.txt")).read().split("\n")
local = threading.local()


def interpreter():
    if not hasattr(local, "interp"):
        local.interp = Interpreter(model_content=MODEL, num_threads=1)
        local.interp.allocate_tensors()
        local.inp, local.out = local.interp.get_input_details()[0], local.interp.get_output_details()[0]
    return local.interp


def predict(png: bytes) -> dict:
    img = Image.open(io.BytesIO(png)).convert("L")
    if img.size != (8, 8):
        img = img.resize((8, 8), Image.Resampling.BILINEAR)
    x = np.asarray(img, dtype=np.float32) * np.float32(1 / 255)
    interp = interpreter()
    interp.set_tensor(local.inp["index"], x.reshape(local.inp["shape"]))
    interp.invoke()
    y = interp.get_tensor(local.out["index"])[0].astype(np.float32)
    e = np.exp(y - y.max())
    p = e / e.sum()
    top = [{"label": LABELS[i], "index": int(i), "score": float(p[i])} for i in np.argsort(-p, kind="stable")[:3]]
    return {"model": SPEC["name"], "predictions": [{**top[0], "top_k": top}]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            status, out = 200, predict(body)
        except Exception as e:  # noqa: BLE001 - the reference answers every error alike
            status, out = 400, {"error": str(e)}
        data = json.dumps(out, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("0.0.0.0", int(sys.argv[2]) if len(sys.argv) > 2 else 8080), Handler).serve_forever()
