"""Models from s3:// against moto's standalone S3 server over HTTP (no patched calls)."""
from __future__ import annotations

import pytest

from mlfn.errors import ModelError
from mlfn.model import quantize_model
from tests.model.helpers import leftovers, project

BUCKET = "mlfn-models"


@pytest.fixture(scope="module")
def s3_server(digits_project):
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    admin = dict(endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="admin", aws_secret_access_key="admin")
    s3 = boto3.client("s3", **admin)
    s3.create_bucket(Bucket=BUCKET)
    s3.upload_file(str(digits_project / "model.keras"), BUCKET, "digits/model.keras")
    saved = digits_project / "model"
    for f in saved.rglob("*"):
        if f.is_file():
            s3.upload_file(str(f), BUCKET, f"digits/saved/{f.relative_to(saved)}")
    # an IAM user with no policy at all: every S3 call is denied once auth is enforced
    iam = boto3.client("iam", **admin)
    iam.create_user(UserName="no-access")
    key = iam.create_access_key(UserName="no-access")["AccessKey"]
    try:
        yield {"endpoint": endpoint, "denied": (key["AccessKeyId"], key["SecretAccessKey"])}
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch, s3_server, tmp_path):
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server["endpoint"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "admin")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "admin")
    return monkeypatch


def test_keras_from_s3(digits_project, digits_tflite, aws_env, tmp_path):
    cfg = project(tmp_path, digits_project, model=f"s3://{BUCKET}/digits/model.keras", mode="int8")
    r = quantize_model(cfg)
    assert r.source == f"s3://{BUCKET}/digits/model.keras" and r.source_format == "keras"
    assert r.sha256 == digits_tflite.sha256  # same bytes in, same model out
    assert r.evaluation["accuracy_drop"] <= 2.0
    assert not leftovers(tmp_path) and not leftovers(digits_project / ".mlfn")


def test_saved_model_prefix_from_s3(digits_project, aws_env, tmp_path):
    cfg = project(tmp_path, digits_project, model=f"s3://{BUCKET}/digits/saved", mode="dynamic")
    r = quantize_model(cfg)
    assert r.source_format == "saved_model" and r.ops_after.get("CONV_2D") == 2


def test_missing_object(digits_project, aws_env, tmp_path):
    cfg = project(tmp_path, digits_project, model=f"s3://{BUCKET}/digits/nope.keras")
    with pytest.raises(ModelError) as e:
        quantize_model(cfg)
    assert str(e.value) == f"S3 object s3://{BUCKET}/digits/nope.keras does not exist; check model.path and the bucket."
    assert not leftovers(tmp_path) and not leftovers(digits_project / ".mlfn")


def test_access_denied(digits_project, aws_env, s3_server, tmp_path):
    from moto import settings

    key_id, secret = s3_server["denied"]
    aws_env.setenv("AWS_ACCESS_KEY_ID", key_id)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", secret)
    cfg = project(tmp_path, digits_project, model=f"s3://{BUCKET}/digits/model.keras")
    before = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # the server runs in this process: enforce IAM now
    try:
        with pytest.raises(ModelError) as e:
            quantize_model(cfg)
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = before
    msg = str(e.value)
    assert msg.startswith(f"Access denied reading s3://{BUCKET}/digits/model.keras")
    assert secret not in msg and key_id not in msg
    assert not leftovers(tmp_path) and not leftovers(digits_project / ".mlfn")


def test_object_keys_with_dot_dot_are_not_written_outside_the_download(aws_env, s3_server, tmp_path):
    """A listed key like 'prefix/../../x' must not be written outside the cache folder
    (a bucket someone else controls could otherwise write anywhere the user may)."""
    import boto3

    from mlfn.model.source import download_s3

    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key="trap/saved_model.pb", Body=b"x")
    s3.put_object(Bucket=BUCKET, Key="trap/../../../escaped.txt", Body=b"evil")
    root = tmp_path / "deep" / "cache" / "s3"
    with pytest.raises(ModelError, match=r"points outside the model folder"):
        download_s3(f"s3://{BUCKET}/trap", root)
    assert not [p for p in tmp_path.rglob("escaped.txt")]
    with pytest.raises(ModelError, match=r"has '\.' or '\.\.' in its key"):
        download_s3(f"s3://{BUCKET}/digits/../../x", root)
