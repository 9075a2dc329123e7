"""A key set, JWT signing keys and a corpus of hostile or wrong credentials, shared by the
in-process and the Docker tests. Everything here is generated per test session."""
from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass

ISSUER = "https://issuer.test"
AUDIENCE = "mlfn-digits"
HS_ENV = "MLFN_TEST_JWT_SECRET"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Material:
    keys: dict  # role -> key string
    key_set: dict  # the document the function reads
    jwks: dict
    signers: dict  # kid -> private key
    hs_secret: str
    rsa_public_pem: bytes
    other_rsa: object

    def secrets(self) -> list:
        """Every secret a log or output must never show."""
        from mlfn_runtime.api_keys import hash_key

        out = list(self.keys.values()) + [hash_key(k) for k in self.keys.values()] + [self.hs_secret]
        return out

    def token(self, kid="r1", alg="RS256", scope="digits:predict", **claims) -> str:
        import jwt

        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 600, "scope": scope}
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        key = self.hs_secret if alg == "HS256" else self.signers[kid]
        headers = {"kid": kid} if alg != "HS256" else {}
        return jwt.encode(payload, key, algorithm=alg, headers=headers)


def make_material(revoked_too: bool = False) -> Material:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    import jwt

    from mlfn_runtime.api_keys import hash_key

    keys = {role: "mlfn_" + secrets.token_urlsafe(32) for role in
            ("predict", "metadata", "expired", "revoked", "other_model", "rated", "all")}
    entries = [
        {"id": "kpredict", "scopes": ["digits:predict"]},
        {"id": "kmeta", "scopes": ["*:metadata"]},
        {"id": "kexpired", "scopes": ["digits:predict"], "expires": int(time.time()) - 60},
        {"id": "kother", "scopes": ["other:predict", "other:infer"]},
        {"id": "krated", "scopes": ["digits:*"], "rate": "20/s", "burst": 5},
        {"id": "kall", "scopes": ["*"]},
    ]
    roles = ["predict", "metadata", "expired", "other_model", "rated", "all"]
    if revoked_too:
        entries.append({"id": "krevoked", "scopes": ["digits:predict"]})
        roles.append("revoked")
    for e, role in zip(entries, roles):
        e["sha256"] = hash_key(keys[role])
    signers = {"r1": rsa.generate_private_key(public_exponent=65537, key_size=2048),
               "e1": ec.generate_private_key(ec.SECP256R1()),
               "d1": ed25519.Ed25519PrivateKey.generate()}
    jwks = {"keys": []}
    for kid, alg, key in (("r1", "RS256", signers["r1"]), ("e1", "ES256", signers["e1"]), ("d1", "EdDSA", signers["d1"])):
        algo = jwt.get_algorithm_by_name(alg)
        jwk = json.loads(algo.to_jwk(key.public_key()))
        jwk.update({"kid": kid, "alg": alg, "use": "sig"})
        jwks["keys"].append(jwk)
    pem = signers["r1"].public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return Material(keys, {"keys": entries, "jwks": jwks}, jwks, signers, secrets.token_urlsafe(32), pem,
                    rsa.generate_private_key(public_exponent=65537, key_size=2048))


AUTH_SETTINGS = {"enabled": True, "reload_seconds": 1, "open": ["metrics", "openapi"],
                 "jwt": {"algorithms": ["RS256", "ES256", "EdDSA", "HS256"], "issuer": ISSUER, "audience": AUDIENCE,
                         "leeway": 5, "hs256_secret_env": HS_ENV}}


def _forge(header: dict, payload: dict, signature: bytes = b"") -> str:
    return ".".join([b64url(json.dumps(header).encode()), b64url(json.dumps(payload).encode()), b64url(signature)])


def hostile_corpus(m: Material) -> list:
    """(name, method, path, headers, expected status); the predict path is POST /predict."""
    import hashlib
    import hmac

    import jwt

    good = m.token()
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": now + 600, "scope": "*"}
    head, payload, sig = good.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered["scope"] = "*"
    confusion_signing = f"{b64url(json.dumps({'alg': 'HS256', 'kid': 'r1', 'typ': 'JWT'}).encode())}." \
                        f"{b64url(json.dumps(claims).encode())}"
    confusion = confusion_signing + "." + b64url(hmac.new(m.rsa_public_pem, confusion_signing.encode(),
                                                          hashlib.sha256).digest())
    bearer = lambda t: {"Authorization": f"Bearer {t}"}  # noqa: E731
    P, M, I = "/predict", "/v1/models/digits/metadata", "/v2/models/digits/infer"  # noqa: E741
    return [
        ("no credential", P, {}, 401),
        ("basic scheme", P, {"Authorization": "Basic dXNlcjpwYXNz"}, 401),
        ("empty bearer", P, {"Authorization": "Bearer "}, 401),
        ("unknown key", P, bearer("mlfn_" + secrets.token_urlsafe(32)), 401),
        ("revoked key", P, bearer(m.keys["revoked"]), 401),
        ("expired key", P, {"X-API-Key": m.keys["expired"]}, 401),
        ("key with a suffix", P, bearer(m.keys["predict"] + "x"), 401),
        ("key truncated", P, {"X-API-Key": m.keys["predict"][:-1]}, 401),
        ("both header forms, same key", P, {**bearer(m.keys["predict"]), "X-API-Key": m.keys["predict"]}, 400),
        ("both header forms, two keys", P, {**bearer(m.keys["metadata"]), "X-API-Key": m.keys["predict"]}, 400),
        ("oversized header", P, {"X-API-Key": "mlfn_" + "a" * 9000}, 401),
        ("non-ASCII key", P, {"X-API-Key": "mlfn_clé".encode("utf-8").decode("latin-1")}, 401),
        ("control characters", P, {"X-API-Key": "mlfn_\x01abc"}, 401),
        ("metadata key on predict", P, {"X-API-Key": m.keys["metadata"]}, 403),
        ("predict key on infer", I, {"X-API-Key": m.keys["predict"]}, 403),
        ("predict key on metadata", M, {"X-API-Key": m.keys["predict"]}, 403),
        ("other model's key", P, {"X-API-Key": m.keys["other_model"]}, 403),
        ("jwt alg none", P, bearer(_forge({"alg": "none", "typ": "JWT"}, claims)), 401),
        ("jwt alg None, kid", P, bearer(_forge({"alg": "None", "kid": "r1"}, claims)), 401),
        ("jwt algorithm confusion (HS256 with the RSA public key)", P, bearer(confusion), 401),
        ("jwt unknown kid", P, bearer(jwt.encode(claims, m.signers["r1"], "RS256", headers={"kid": "zz"})), 401),
        ("jwt tampered payload", P, bearer(f"{head}.{b64url(json.dumps(tampered).encode())}.{sig}"), 401),
        ("jwt tampered signature", P, bearer(f"{head}.{payload}.{sig[:-4]}AAAA"), 401),
        ("jwt signed by a stranger with a known kid", P,
         bearer(jwt.encode(claims, m.other_rsa, "RS256", headers={"kid": "r1"})), 401),
        ("jwt RS256 naming the EC key", P, bearer(jwt.encode(claims, m.signers["r1"], "RS256", headers={"kid": "e1"})), 401),
        ("jwt RS512 (not accepted)", P, bearer(jwt.encode(claims, m.signers["r1"], "RS512", headers={"kid": "r1"})), 401),
        ("jwt expired", P, bearer(m.token(exp=now - 120)), 401),
        ("jwt not yet valid", P, bearer(m.token(nbf=now + 600)), 401),
        ("jwt wrong issuer", P, bearer(m.token(iss="https://evil.test")), 401),
        ("jwt wrong audience", P, bearer(m.token(aud="someone-else")), 401),
        ("jwt without exp", P, bearer(m.token(exp=None)), 401),
        ("jwt HS256 with a wrong secret", P, bearer(jwt.encode(claims, "not-the-secret-" * 3, "HS256")), 401),
        ("jwt malformed", P, bearer("aaa.bbb.ccc"), 401),
        ("jwt not base64", P, bearer("!!.??.**"), 401),
        ("jwt outside its scopes", P, bearer(m.token(scope="digits:metadata")), 403),
        ("jwt without a scope claim", P, bearer(m.token(scope=None)), 403),
    ]


def accepted(m: Material) -> list:
    """(name, path, headers) that must be served (200)."""
    return [
        ("key in Authorization", "/predict", {"Authorization": f"Bearer {m.keys['predict']}"}),
        ("key in X-API-Key", "/predict", {"X-API-Key": m.keys["predict"]}),
        ("wildcard key on infer", "/v1/models/digits/metadata", {"X-API-Key": m.keys["all"]}),
        ("RS256", "/predict", {"Authorization": f"Bearer {m.token('r1', 'RS256')}"}),
        ("ES256", "/predict", {"Authorization": f"Bearer {m.token('e1', 'ES256')}"}),
        ("EdDSA", "/predict", {"Authorization": f"Bearer {m.token('d1', 'EdDSA')}"}),
        ("HS256", "/predict", {"Authorization": f"Bearer {m.token(alg='HS256')}"}),
    ]
