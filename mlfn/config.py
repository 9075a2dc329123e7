"""The mlfn.yaml schema: every key, its type and its default, in one place.

Layers (ko style, building new values rather than mutating): defaults, then the file,
then `MLFN_*` environment variables, then flags (`Config.override`). Unknown keys and
wrong types are ConfigErrors that name the key and the file.

Pipeline steps are kept as plain data (a list of `{step_name: {params}}` mappings, or a
bare step name); the function runtime (`mlfn_runtime.pipeline`) owns their meaning and
validates them (`mlfn_runtime.pipeline.validate_steps`).
"""
from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from mlfn.config_sections import CONFIG_FILE, AuthConfig, JwtConfig, RolloutConfig, check_auth  # noqa: F401
from mlfn.errors import ConfigError

QUANTIZE_MODES = ("none", "dynamic", "float16", "int8", "int8-selective", "int16x8", "auto")
# What quantize.mode auto tries by default (int16x8 is opt-in: its int16 kernels are slow on CPUs).
AUTO_MODES = ("int8", "int8-selective", "dynamic", "float16", "none")
RUNTIME_TARGETS = ("litert", "tflite-runtime")
TARGETS = ("local", "openwhisk", "knative")


@dataclass
class ModelConfig:
    """The trained model to serve."""

    path: str = "model.keras"  # .keras, .h5, SavedModel dir, .tflite, or s3://bucket/key
    signature: str = "serving_default"  # SavedModel signature to convert
    name: Optional[str] = None  # model name on /v2/models/{name}, /v1/models/{name}; default: function name


@dataclass
class QuantizeConfig:
    """How the TFLite converter shrinks the model."""

    mode: str = "dynamic"  # none | dynamic | float16 | int8 | int8-selective | int16x8 | auto (smallest that passes the gate)
    target: str = "litert"  # litert | tflite-runtime (2.14-compatible op versions)
    representative_data: Optional[str] = None  # .npy/.npz or a folder of images (int8, int16x8)
    representative_samples: int = 100  # how many calibration samples to use
    input_type: str = "float32"  # int8 models: float32 | int8 | uint8
    output_type: str = "float32"  # int8 models: float32 | int8 | uint8
    per_channel: bool = True  # per-channel weight scales (accurate); false: per-tensor (smaller file)
    allow_select_tf_ops: bool = False  # SELECT_TF_OPS fallback: needs full TensorFlow in the image
    validation_data: Optional[str] = None  # .npz (x, y) or an image folder with one sub-folder per label
    top_k: list = field(default_factory=lambda: [1])  # accuracies to report: top-1, top-5, ...
    max_accuracy_drop: Optional[float] = None  # in accuracy points (0-100); fail when exceeded
    max_mse_increase_pct: Optional[float] = None  # regression models: fail when MSE grows by more than this %
    cache_dir: Optional[str] = None  # default: .mlfn/cache next to mlfn.yaml
    auto_modes: list = field(default_factory=lambda: list(AUTO_MODES))  # modes auto tries; the smallest passing file wins
    selective_max_float_share: float = 0.5  # int8-selective: keep at most this share of the layers in float


@dataclass
class PipelineConfig:
    """Pre- and post-processing run inside the function (see mlfn_runtime.pipeline)."""

    pre: list = field(default_factory=list)
    post: list = field(default_factory=list)
    labels: Optional[str] = None  # labels file, one per line; used by top_k


@dataclass
class ExtraModel:
    """Another model bundled into the same function (requests fan out to all or named ones)."""

    name: str = ""  # model name on /v2/models/{name}
    path: str = ""  # like model.path
    signature: str = "serving_default"  # SavedModel signature
    quantize: Optional[str] = None  # quantization mode; default: quantize.mode
    pre: Optional[list] = None  # default: pipeline.pre
    post: Optional[list] = None  # default: pipeline.post
    labels: Optional[str] = None


@dataclass
class BuildConfig:
    """The function image."""

    base_image: str = "mlfn-base:3.11"  # any Python 3.11 image; `mlfn base build` makes this one
    image: Optional[str] = None  # default: mlfn/<name>
    tag: Optional[str] = None  # default: a content hash
    builder: str = "docker"  # docker | oci (daemonless)
    runtime: str = "litert"  # litert | tflite-runtime: the interpreter installed in the image
    custom_files: list = field(default_factory=list)  # extra Python files (custom steps) to bundle
    context_dir: Optional[str] = None  # default: .mlfn/build next to mlfn.yaml


@dataclass
class EventsConfig:
    """CloudEvents on POST / and /events (see actions/README.md, CloudEvents)."""

    reply: bool = True  # answer with a dev.mlfn.inference.response event; false: 202, no body


@dataclass
class BatchingConfig:
    """Server-side batching: concurrent requests for one model share one interpreter call."""

    enabled: bool = True  # coalesce concurrent requests (a lone request never waits; README, "Server-side batching")
    max_batch_size: int = 32  # rows per shared interpreter call; a request with more runs alone
    max_latency_ms: float = 2.0  # longest wait for other requests (0: coalesce only while the interpreters are busy)


@dataclass
class ServingConfig:
    """Behaviour of the server inside the function."""

    max_batch_size: int = 32  # inputs one request may carry, run as one interpreter call (see also batching)
    max_payload_bytes: int = 1048576  # like OpenWhisk's 1 MB invoke payload limit
    interpreter: str = "per-thread"  # per-thread | lock (LiteRT interpreters are not thread-safe)
    num_threads: int = 1  # interpreter threads per invoke
    workers: int = 8  # HTTP handler threads
    grpc: bool = False  # also the OIP v2 gRPC service, over h2c on the same port (mlfn run, Knative; not OpenWhisk)
    events: EventsConfig = field(default_factory=EventsConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    # connections and shutdown (actions/README.md, "Connections and deadlines")
    header_timeout_seconds: float = 10.0  # a request's headers must arrive within this
    body_timeout_seconds: float = 30.0  # its body (and the answer's write) within this
    idle_timeout_seconds: float = 120.0  # an idle keep-alive connection is closed after this
    max_connections: int = 256  # open connections; more get 503 and are closed
    drain_seconds: float = 20.0  # after SIGTERM, in-flight requests get this long (below the platforms' grace)
    openwhisk: Optional[bool] = None  # serve /init and /run; default: yes, but not on Knative
    code_actions: bool = False  # run code sent to /init (needs an init token; see actions/README.md)
    init_token_sha256: Optional[str] = None  # SHA-256 of the init token code actions must carry


@dataclass
class LoggingConfig:
    """Payload logging: each request and its response as two CloudEvents to `sink`."""

    sink: Optional[str] = None  # http(s) URL that receives the events; none: off
    sample_rate: float = 1.0  # share of requests logged, 0..1
    payload: str = "full"  # full | metadata (images: only type, size and shape; the prediction in full)


@dataclass
class OpenWhiskConfig:
    """OpenWhisk (and the local target): web export of aliases."""

    web: bool = False  # export the alias as a web action
    require_whisk_auth: bool = False  # protect the web action with a generated secret
    namespace: Optional[str] = None  # default: NAMESPACE from ~/.wskprops, else _


@dataclass
class KnativeConfig:
    """Knative Serving: namespace, autoscaling and resources of each revision."""

    namespace: Optional[str] = None  # default: the kubeconfig context's namespace
    context: Optional[str] = None  # kubeconfig context; default: the current one
    min_scale: int = 0
    max_scale: int = 0  # 0 = unlimited
    target: Optional[int] = None  # autoscaling target (concurrency or rps)
    metric: str = "concurrency"  # concurrency | rps (KPA), cpu | memory (HPA)
    autoscaling_class: str = "kpa.autoscaling.knative.dev"  # or hpa.autoscaling.knative.dev
    cpu: Optional[str] = None  # resource request, e.g. "500m"
    cpu_limit: Optional[str] = None  # e.g. "1"
    memory_limit: Optional[str] = None  # default: deploy.memory
    timeout_seconds: Optional[int] = None  # default: deploy.timeout / 1000
    wait_timeout: int = 300  # seconds mlfn waits for a new revision or a traffic change to become ready


@dataclass
class DeployConfig:
    """Where and how versions run."""

    target: str = "local"  # local | openwhisk | knative
    registry: Optional[str] = None  # push here before deploying (REGISTRY/REPO); none for local
    memory: int = 256  # MB
    timeout: int = 60000  # ms
    concurrency: int = 1  # concurrent activations per container
    logs: int = 10  # MB
    env: dict = field(default_factory=dict)
    openwhisk: OpenWhiskConfig = field(default_factory=OpenWhiskConfig)
    knative: KnativeConfig = field(default_factory=KnativeConfig)


@dataclass
class Config:
    """The whole mlfn.yaml."""

    name: str = "model"  # the function's name: OpenWhisk package, Knative service
    model: ModelConfig = field(default_factory=ModelConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    models: list = field(default_factory=list)  # more models in the same function: [{name, path, ...}]
    build: BuildConfig = field(default_factory=BuildConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)

    # Where the file was read from; relative paths in it are relative to its folder.
    source: Optional[Path] = field(default=None, compare=False, repr=False)

    @property
    def project_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    def resolve(self, path: Optional[str]) -> Optional[str]:
        """A path from the file, made absolute against the project folder (s3:// kept)."""
        if path is None or "://" in str(path):
            return path
        p = Path(os.path.expanduser(str(path)))
        return str(p if p.is_absolute() else (self.project_dir / p))

    @property
    def model_name(self) -> str:
        return self.model.name or self.name

    @property
    def image_repository(self) -> str:
        return self.build.image or f"mlfn/{self.name}"

    def override(self, dotted: dict) -> "Config":
        """A copy with `{"quantize.mode": "int8", ...}` applied (None values skipped)."""
        data = to_dict(self)
        for key, value in dotted.items():
            if value is None:
                continue
            node = data
            parts = key.split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = value
        return from_dict(data, source=self.source)

    def validate(self) -> "Config":
        _check_choice(self.quantize.mode, QUANTIZE_MODES, "quantize.mode", self.source)
        _check_choice(self.quantize.target, RUNTIME_TARGETS, "quantize.target", self.source)
        for m in self.quantize.auto_modes:
            _check_choice(m, QUANTIZE_MODES[:-1], "quantize.auto_modes", self.source)
        if not self.quantize.auto_modes:
            raise ConfigError(f"quantize.auto_modes in {self.source or CONFIG_FILE} is empty; list the modes auto may "
                              f"pick from ({', '.join(AUTO_MODES)}).")
        if not 0.0 < self.quantize.selective_max_float_share <= 1.0:
            raise ConfigError(f"quantize.selective_max_float_share in {self.source or CONFIG_FILE} is "
                              f"{self.quantize.selective_max_float_share}; use a share above 0 and at most 1.")
        _check_choice(self.build.runtime, RUNTIME_TARGETS, "build.runtime", self.source)
        _check_choice(self.build.builder, ("docker", "oci"), "build.builder", self.source)
        _check_choice(self.deploy.target, TARGETS, "deploy.target", self.source)
        _check_choice(self.serving.interpreter, ("lock", "per-thread"), "serving.interpreter", self.source)
        _check_choice(self.logging.payload, ("full", "metadata"), "logging.payload", self.source)
        if not 0.0 <= self.logging.sample_rate <= 1.0:
            raise ConfigError(f"logging.sample_rate in {self.source or CONFIG_FILE} is {self.logging.sample_rate}; "
                              "use a share between 0 and 1.")
        if self.logging.sink is not None and not self.logging.sink.startswith(("http://", "https://")):
            raise ConfigError(f"logging.sink in {self.source or CONFIG_FILE} is {self.logging.sink!r}; "
                              "use an http:// or https:// URL.")
        check_auth(self.auth, self.source)
        _check_batching(self.serving.batching, self.source)
        names = [self.model_name] + [m.name for m in self.models]
        for i, m in enumerate(self.models):
            if not m.name or not m.path:
                raise ConfigError(f"models[{i}] in {self.source or CONFIG_FILE} needs both 'name' and 'path'.")
        for key, n in [("model.name" if self.model.name else "name", self.model_name)] + [
                (f"models[{i}].name", m.name) for i, m in enumerate(self.models)]:
            # a model name is a folder in the image (models/NAME/) and a URL path segment
            if n in (".", "..") or any(c in n for c in '/\\:?#%\0') or n != n.strip():
                also = " (it names the model too; set model.name)" if key == "name" else ""
                raise ConfigError(f"{key} in {self.source or CONFIG_FILE} is {n!r}{also}; a model name cannot be "
                                  "'.' or '..', hold '/', '\\', ':', '?', '#' or '%', or start or end with a space.")
        if len(set(names)) != len(names):
            raise ConfigError(f"Model names must be unique in {self.source or CONFIG_FILE}; got {names}.")
        check_function_name(self.name, f"name in {self.source or CONFIG_FILE}")
        if self.build.image is not None and not _REPOSITORY.match(self.build.image):
            raise ConfigError(f"build.image in {self.source or CONFIG_FILE} is {self.build.image!r}, which is not an "
                              "image repository; use [HOST[:PORT]/]path/name in lower case, without a tag (set "
                              "build.tag for that), e.g. localhost:5000/team/digits.")
        return self


# A function name is also its image repository (mlfn/NAME) and its OpenWhisk/Knative name.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# a first component is a registry host only with a '.' or a port, or when it is localhost (as Docker reads it)
_HOST = r"(?:(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|localhost)(?::[0-9]+)?|[A-Za-z0-9-]+:[0-9]+)/"
_REPOSITORY = re.compile(rf"^(?:{_HOST})?{_COMPONENT}(?:/{_COMPONENT})*$")
_FUNCTION_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


def check_function_name(name: str, where: str) -> None:
    """ConfigError unless `name` can name the function's image (lower-case letters and digits,
    '-', '_' or '.' between them)."""
    if not _FUNCTION_NAME.match(name or "") or len(name) > 63:
        fixed = re.sub(r"[^a-z0-9]+", "-", (name or "").lower()).strip("-")[:63].strip("-") or "my-model"
        raise ConfigError(f"{where} is {name!r}, which cannot name the function's image; use lower-case letters "
                          f"and digits with '-', '_' or '.' between them (at most 63), e.g. {fixed!r}.")


def _check_batching(batching: BatchingConfig, source) -> None:
    where = f"in {source or CONFIG_FILE}"
    if batching.max_batch_size < 1:
        raise ConfigError(f"serving.batching.max_batch_size {where} is {batching.max_batch_size}; use at least 1 "
                          "(rows per shared interpreter call).")
    if not 0 <= batching.max_latency_ms <= 1000:
        raise ConfigError(f"serving.batching.max_latency_ms {where} is {batching.max_latency_ms:g}; use a number "
                          "of milliseconds from 0 to 1000.")


def _check_choice(value, choices, key, source):
    if value not in choices:
        raise ConfigError(
            f"{key} in {source or CONFIG_FILE} is {value!r}; choose one of: {', '.join(choices)}."
        )


def to_dict(cfg: Any) -> dict:
    out = {}
    for f in dataclasses.fields(cfg):
        if f.name == "source":
            continue
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, list):
            v = [to_dict(x) if dataclasses.is_dataclass(x) else x for x in v]
        out[f.name] = v
    return out


_SCALARS = {int: (int,), float: (int, float), str: (str,), bool: (bool,), list: (list,), dict: (dict,)}


def _build(cls, data: Any, where: str, source) -> Any:
    src = source or CONFIG_FILE
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"'{where or 'the top level'}' in {src} must be a mapping, not {type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"Unknown key '{dotted}' in {src}; known keys here: {known}.")
        hint = hints[key]
        optional = typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint)
        if optional:
            hint = [a for a in typing.get_args(hint) if a is not type(None)][0]
        if value is None:
            if optional:
                kwargs[key] = None
                continue
            raise ConfigError(f"'{dotted}' in {src} must not be empty.")
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, dotted, source)
        elif key == "models" and cls is Config:
            if not isinstance(value, list):
                raise ConfigError(f"'{dotted}' in {src} must be a list of models.")
            kwargs[key] = [_build(ExtraModel, v, f"{dotted}[{i}]", source) for i, v in enumerate(value)]
        else:
            base = typing.get_origin(hint) or hint
            ok = _SCALARS.get(base, (base,))
            if isinstance(value, bool) and base in (int, float):
                ok = ()
            if not isinstance(value, ok):
                raise ConfigError(
                    f"'{dotted}' in {src} must be {base.__name__}, not {type(value).__name__} ({value!r})."
                )
            kwargs[key] = float(value) if base is float else value
    return cls(**kwargs)


def from_dict(data: dict, source: Optional[Path] = None) -> Config:
    cfg = _build(Config, data, "", source)
    cfg.source = source
    return cfg.validate()


def _env_overrides() -> dict:
    """`MLFN_QUANTIZE__MODE=int8` sets quantize.mode (double underscore = dot)."""
    out = {}
    for k, v in os.environ.items():
        if not k.startswith("MLFN_") or "__" not in k:
            continue
        dotted = k[5:].lower().replace("__", ".")
        out[dotted] = _parse_scalar(v)
    return out


def _parse_scalar(v: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(v)
    except yaml.YAMLError:
        return v


def find_config(path: Optional[str] = None) -> Path:
    p = Path(path) if path else Path.cwd() / CONFIG_FILE
    if p.is_dir():
        p = p / CONFIG_FILE
    return p


def load_config(path: Optional[str] = None, overrides: Optional[dict] = None, required: bool = True) -> Config:
    """Read mlfn.yaml (or the folder holding it), apply MLFN_* env and flag overrides."""
    import yaml

    p = find_config(path)
    if not p.exists():
        if required:
            raise ConfigError(
                f"No {CONFIG_FILE} at {p}; run 'mlfn init MODEL' to write one, or pass --config PATH."
            )
        data: dict = {}
    else:
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{p}{at} is not valid YAML: {getattr(e, 'problem', e)}.") from None
        if not data:
            raise ConfigError(f"{p} is empty; run 'mlfn init MODEL --force' to write one for your model.")
    cfg = from_dict(data, source=p.resolve() if p.exists() else None)
    for dotted, value in _env_overrides().items():
        var = "MLFN_" + dotted.upper().replace(".", "__")
        try:
            cfg = cfg.override({dotted: value})
        except ConfigError as e:
            where = f" in {cfg.source or CONFIG_FILE}"
            raise ConfigError(f"{str(e).replace(where, '')} (set by the environment variable {var})") from None
    return cfg.override(overrides) if overrides else cfg
