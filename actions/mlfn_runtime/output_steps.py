"""Output steps (post-processing of one prediction): softmax, sigmoid, argmax, top_k,
threshold, identity. Built-in steps act on the first output of multi-output models."""
from __future__ import annotations

from typing import Any

import numpy as np

from mlfn_runtime.step import POST, Step
from mlfn_runtime.step_params import Param, number, positive_int, string


class Softmax(Step):
    name, stages = "softmax", (POST,)

    def __call__(self, x):
        x = _scores(x)
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)


class Sigmoid(Step):
    name, stages = "sigmoid", (POST,)

    def __call__(self, x):
        x = _scores(x)
        with np.errstate(over="ignore"):  # exp(-x) -> inf gives the right limit, 0
            return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


class Argmax(Step):
    """The best class: `{"index", "label", "score"}`."""

    name, stages, answers_json = "argmax", (POST,), True
    params = {"labels": Param(string)}

    def setup(self):
        self.names = self.pipeline.load_labels(self.labels)

    def __call__(self, x):
        x = _scores(x).reshape(-1)
        i = int(np.argmax(x))
        return {"label": self.pipeline.label(self.names, i), "index": i, "score": float(x[i])}


# Up to this many classes top_k sorts in Python: for ten classes 0.8 us against numpy's
# 3.9 us, and numpy's argpartition/argsort release and retake the GIL, which under
# concurrent requests means waiting behind other threads twice per request.
PYTHON_SORT_MAX = 256


class TopK(Step):
    """The k best classes with labels: `{"label", "index", "score", "top_k": [...]}`."""

    name, stages, answers_json = "top_k", (POST,), True
    params = {"k": Param(positive_int, default=5), "labels": Param(string)}

    def setup(self):
        self.names = self.pipeline.load_labels(self.labels)

    def __call__(self, x):
        x = _scores(x).reshape(-1)
        k = min(self.k, x.size)
        scores = x.tolist()  # Python floats at once, not one numpy scalar per entry
        if x.size <= PYTHON_SORT_MAX:  # numpy's sorts release the GIL: a wait for it under load
            best = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)[:k]
        else:
            idx = np.argpartition(-x, k - 1)[:k] if k < x.size else np.arange(x.size)
            best = idx[np.argsort(-x[idx], kind="stable")].tolist()
        top = [{"label": self.pipeline.label(self.names, i), "index": i, "score": scores[i]} for i in best]
        return {**top[0], "top_k": top}


class Threshold(Step):
    """Keep what scores at least `value`.

    On a single score: `{"score", "positive"}`; on several (multi-label): `{"positive":
    [{"label", "index", "score"}, ...]}`; after top_k/argmax: filters those entries."""

    name, stages = "threshold", (POST,)
    params = {"value": Param(number, default=0.5), "labels": Param(string)}

    def setup(self):
        self.names = self.pipeline.load_labels(self.labels)

    def __call__(self, x):
        v = self.value
        if isinstance(x, dict) and "score" in x:
            out = dict(x)
            if "top_k" in out:
                out["top_k"] = [t for t in out["top_k"] if t["score"] >= v]
            if x["score"] < v:
                out.update(label=None, index=None)
            return out
        x = _scores(x).reshape(-1)
        if x.size == 1:
            return {"score": float(x[0]), "positive": bool(x[0] >= v)}
        hits = [int(i) for i in np.flatnonzero(x >= v)]
        hits.sort(key=lambda i: -x[i])
        return {"positive": [{"label": self.pipeline.label(self.names, i), "index": i, "score": float(x[i])} for i in hits]}


class Identity(Step):
    name = "identity"

    def __call__(self, x):
        return x


def _scores(x: Any) -> np.ndarray:
    if isinstance(x, dict):  # multi-output model: built-in steps act on the first output
        x = next(iter(x.values()))
    return np.asarray(x, dtype=np.float32)
