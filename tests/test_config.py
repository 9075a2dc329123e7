import pytest
import yaml

from mlfn.config import Config, from_dict, load_config, to_dict
from mlfn.errors import ConfigError


def test_defaults_round_trip():
    cfg = from_dict({})
    assert cfg.quantize.mode == "dynamic"
    assert cfg.serving.max_payload_bytes == 1048576
    assert from_dict(to_dict(cfg)) == cfg


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "mlfn.yaml"
    p.write_text("name: x\nquantize:\n  mdoe: int8\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(p))
    assert "quantize.mdoe" in str(e.value) and str(p) in str(e.value)


@pytest.mark.parametrize(
    "data, key",
    [
        ({"serving": {"max_batch_size": "many"}}, "serving.max_batch_size"),
        ({"deploy": {"memory": True}}, "deploy.memory"),
        ({"quantize": {"mode": "int4"}}, "quantize.mode"),
        ({"deploy": {"target": "lambda"}}, "deploy.target"),
        ({"models": [{"name": "a"}]}, "models[0]"),
        ({"quantize": "int8"}, "quantize"),
    ],
)
def test_wrong_types_and_values_name_the_key(data, key):
    with pytest.raises(ConfigError) as e:
        from_dict(data)
    assert key in str(e.value)


def test_layers_file_env_flags(tmp_path, monkeypatch):
    p = tmp_path / "mlfn.yaml"
    p.write_text(yaml.safe_dump({"name": "f", "quantize": {"mode": "float16"}, "deploy": {"memory": 128}}))
    monkeypatch.setenv("MLFN_QUANTIZE__MODE", "int8")
    monkeypatch.setenv("MLFN_DEPLOY__MEMORY", "512")
    cfg = load_config(str(tmp_path), overrides={"deploy.memory": 384})
    assert cfg.quantize.mode == "int8"  # env over file
    assert cfg.deploy.memory == 384  # flag over env
    assert cfg.resolve("model.keras") == str(tmp_path / "model.keras")
    assert cfg.resolve("s3://b/k") == "s3://b/k"


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="mlfn init"):
        load_config(str(tmp_path))
    (tmp_path / "mlfn.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(tmp_path))


def test_duplicate_model_names():
    with pytest.raises(ConfigError, match="unique"):
        from_dict({"name": "a", "models": [{"name": "a", "path": "x.tflite"}]})
    cfg = from_dict({"name": "a", "models": [{"name": "b", "path": "x.tflite"}]})
    assert cfg.models[0].path == "x.tflite" and isinstance(cfg, Config)


def test_bad_environment_override_names_the_variable(tmp_path, monkeypatch):
    (tmp_path / "mlfn.yaml").write_text("name: f\n")
    monkeypatch.setenv("MLFN_QUANTIZE__MODE", "int9")
    with pytest.raises(ConfigError) as e:
        load_config(str(tmp_path))
    msg = str(e.value)
    assert "MLFN_QUANTIZE__MODE" in msg and "int9" in msg and "mlfn.yaml" not in msg
    monkeypatch.setenv("MLFN_QUANTIZE__MODE", "int8")
    monkeypatch.setenv("MLFN_DEPLOY__MEMRY", "512")
    with pytest.raises(ConfigError, match="MLFN_DEPLOY__MEMRY"):
        load_config(str(tmp_path))


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_an_empty_config_is_refused_with_a_pointer_to_init(tmp_path, text):
    (tmp_path / "mlfn.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"is empty; run 'mlfn init MODEL"):
        load_config(str(tmp_path))


@pytest.mark.parametrize("name", ["My Model!", "Digits", "-x", "a" * 64])
def test_a_function_name_that_cannot_name_an_image_is_refused_where_the_config_is_read(tmp_path, name):
    (tmp_path / "mlfn.yaml").write_text(yaml.safe_dump({"name": name}))
    with pytest.raises(ConfigError) as e:
        load_config(str(tmp_path))
    message = str(e.value)
    assert f"name in {tmp_path / 'mlfn.yaml'} is {name!r}" in message and "lower-case letters" in message


@pytest.mark.parametrize("image,ok", [("mlfn/digits", True), ("localhost:5000/team/digits", True),
                                      ("registry.example.com/a/b-c", True), ("My Image", False),
                                      ("mlfn/digits:dev", False), ("Team/digits", False)])
def test_build_image_must_be_a_repository(image, ok):
    if ok:
        assert from_dict({"name": "digits", "build": {"image": image}}).image_repository == image
        return
    with pytest.raises(ConfigError, match=rf"build.image in mlfn.yaml is '{image}', which is not an image repository"):
        from_dict({"name": "digits", "build": {"image": image}})
