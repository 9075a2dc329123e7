"""Guard.admit without a server: JWKS from a file or the environment (re-read on change),
per-subject rate limits for tokens, scope wildcards, rate and key set parsing."""
from __future__ import annotations

import json
import time

import pytest

from mlfn_runtime.api_keys import parse_key_set, parse_rate, scope_allows
from mlfn_runtime.auth import AuthSettings, Denied, Guard
from tests.auth.credentials import AUDIENCE, ISSUER

JWT = {"algorithms": ["RS256", "ES256", "EdDSA"], "issuer": ISSUER, "audience": AUDIENCE}


def _guard(tmp_path, jwt_settings, environ=None) -> Guard:
    settings = AuthSettings.from_dict({"enabled": True, "keys_file": str(tmp_path / "none.json"), "reload_seconds": 1,
                                       "jwt": jwt_settings}, environ={})
    return Guard(settings, environ=environ or {})


def _status(guard, token, scope="predict") -> int:
    try:
        guard.admit({"Authorization": f"Bearer {token}"}, scope, ("digits",))
        return 200
    except Denied as d:
        return d.status


def test_jwks_from_the_environment_and_a_file_re_read_on_change(tmp_path, material, monkeypatch):
    monkeypatch.setenv("MLFN_TEST_JWKS", json.dumps(material.jwks))
    guard = _guard(tmp_path, {**JWT, "jwks_env": "MLFN_TEST_JWKS"})
    assert _status(guard, material.token("d1", "EdDSA")) == 200
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(material.jwks))
    guard = _guard(tmp_path, {**JWT, "jwks_file": str(jwks_file)})
    token = material.token("r1", "RS256")
    assert _status(guard, token) == 200
    jwks_file.write_text(json.dumps({"keys": [k for k in material.jwks["keys"] if k["kid"] != "r1"]}))
    deadline = time.monotonic() + 3.5  # the JWKS file is checked every 2 s
    while _status(guard, token) != 401:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_token_subjects_are_rate_limited(tmp_path, material, monkeypatch):
    monkeypatch.setenv("MLFN_TEST_JWKS", json.dumps(material.jwks))
    guard = _guard(tmp_path, {**JWT, "jwks_env": "MLFN_TEST_JWKS", "rate": "1/m", "burst": 2})
    alice, bob = material.token(sub="alice"), material.token(sub="bob")
    assert [_status(guard, alice) for _ in range(3)] == [200, 200, 429]
    assert _status(guard, bob) == 200  # another subject, another bucket


def test_an_unconfigured_hs256_is_refused_even_with_the_right_shape(tmp_path, material, monkeypatch):
    monkeypatch.setenv("MLFN_TEST_JWKS", json.dumps(material.jwks))
    guard = _guard(tmp_path, {**JWT, "jwks_env": "MLFN_TEST_JWKS"})
    assert _status(guard, material.token(alg="HS256")) == 401


@pytest.mark.parametrize("scopes, model, route, ok", [
    (("digits:predict",), "digits", "predict", True),
    (("digits:predict",), "digits", "infer", False),
    (("*:metadata",), "other", "metadata", True),
    (("digits:*",), "digits", "metrics", True),
    (("*",), "digits", "init", False),
    (("digits:init",), "digits", "init", True),
    (("other:predict",), "digits", "predict", False),
])
def test_scopes(scopes, model, route, ok):
    assert scope_allows(scopes, model, route) is ok


def test_rates_and_key_sets_say_what_is_wrong():
    assert parse_rate("20/s") == 20 and parse_rate("600/m") == 10
    for bad in ("fast", "0/s", "5/fortnight"):
        with pytest.raises(ValueError, match="rate"):
            parse_rate(bad)
    with pytest.raises(ValueError, match="keys\\[0\\]"):
        parse_key_set({"keys": [{"id": "x"}]})
    with pytest.raises(ValueError, match="jwks"):
        parse_key_set({"keys": [], "jwks": []})


def test_the_platforms_jwt_settings_override_the_images(tmp_path, material, monkeypatch):
    """The key set document may carry `jwt` (issuer, audience, ...) and `jwks`: they rotate
    with the keys, no new version."""
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"keys": [], "jwks": material.jwks}))
    settings = AuthSettings.from_dict({"enabled": True, "keys_file": str(keys_file), "reload_seconds": 1,
                                       "jwt": JWT}, environ={})
    guard = Guard(settings, environ={})
    token = material.token("r1", "RS256")
    assert _status(guard, token) == 200
    keys_file.write_text(json.dumps({"keys": [], "jwks": material.jwks, "jwt": {"issuer": "https://new-issuer.test"}}))
    deadline = time.monotonic() + 2.5
    while _status(guard, token) != 401:  # the old issuer is refused now
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert _status(guard, material.token("r1", "RS256", iss="https://new-issuer.test")) == 200
