"""`mlfn keys create|list|revoke`: API keys of a deployed function (mlfn.keys)."""
from __future__ import annotations

import datetime

import click

from mlfn.commands.options import config_option, output_option, project_config, target_from, target_options
from mlfn.output import emit, table


def _when(ts) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if ts else "-"


def _target(config_path, kw):
    from mlfn.releases import open_target

    cfg = project_config(config_path)
    return open_target(cfg, target_from(kw))


@click.group()
def keys():
    """API keys of a deployed function, kept on the platform (hashes only).

    \b
    Examples:
      mlfn keys create digits --scope digits:predict --expires 90d --rate 20/s
      mlfn keys list digits
      mlfn keys revoke digits k3f9a1c2
    """


@keys.command("create")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, metavar="MODEL:ROUTE",
              help="What the key may do: MODEL (or *) : predict|infer|metadata|metrics|* (repeatable).")
@click.option("--expires", metavar="DURATION", help="Expire after e.g. 90d, 12h, 2w (default: never).")
@click.option("--rate", metavar="COUNT/UNIT", help="Token-bucket rate, e.g. 20/s or 600/m (default: none).")
@click.option("--burst", type=click.IntRange(1), help="Bucket size (default: one second's worth of --rate).")
@config_option
@target_options
@output_option
def create(name, scopes, expires, rate, burst, config_path, output, **kw):
    """Create a key for function NAME and print it ONCE (only its hash is stored).

    \b
    Examples:
      mlfn keys create digits --scope digits:predict --expires 90d --rate 20/s
      mlfn keys create digits --scope '*:metadata' -t knative -o json
    """
    from mlfn.keys import create_key

    out = create_key(_target(config_path, kw), name, list(scopes), expires, rate, burst)
    emit(out, output, lambda c: (f"Created key {c.info.id} for {c.function} (scopes: {' '.join(c.info.scopes)}, "
                                 f"expires: {_when(c.info.expires)}):\n{c.key}\n"
                                 "Store it now: it is not shown again. Send it as 'Authorization: Bearer KEY' "
                                 "or 'X-API-Key: KEY'."))


@keys.command("list")
@click.argument("name")
@config_option
@target_options
@output_option
def list_(name, config_path, output, **kw):
    """List the keys of function NAME: ids, scopes, expiry, rate (never a key or hash).

    \b
    Examples:
      mlfn keys list digits
      mlfn keys list digits -t openwhisk -o json
    """
    from mlfn.keys import list_keys

    out = list_keys(_target(config_path, kw), name)
    emit(out, output, lambda ks: table([(k.id, " ".join(k.scopes), _when(k.created),
                                         _when(k.expires) + (" (expired)" if k.expired else ""), k.rate or "-",
                                         "unknown") for k in ks],
                                       ["ID", "SCOPES", "CREATED", "EXPIRES", "RATE", "LAST USED"]))


@keys.command("revoke")
@click.argument("name")
@click.argument("key_id")
@config_option
@target_options
@output_option
def revoke(name, key_id, config_path, output, **kw):
    """Revoke key KEY_ID of function NAME; running functions refuse it within the target's bound.

    \b
    Examples:
      mlfn keys revoke digits k3f9a1c2
    """
    from mlfn.keys import revoke_key

    out = revoke_key(_target(config_path, kw), name, key_id)
    emit(out, output, lambda k: f"Revoked key {k.id} of {name}.")


@keys.command("jwt")
@click.argument("name")
@click.option("--issuer", help="Required 'iss' of accepted tokens.")
@click.option("--audience", help="Required 'aud' of accepted tokens.")
@click.option("--algorithm", "algorithms", multiple=True, type=click.Choice(["RS256", "ES256", "EdDSA", "HS256"]),
              help="Accepted algorithm (repeatable; default: function.json's).")
@click.option("--scope-claim", help="Claim holding MODEL:ROUTE scopes (default: scope).")
@click.option("--jwks", "jwks_path", type=click.Path(dir_okay=False), help="A JWKS file of public keys to keep "
              "on the platform (replaces the stored one: rotate by adding the new key first).")
@config_option
@target_options
@output_option
def jwt(name, issuer, audience, algorithms, scope_claim, jwks_path, config_path, output, **kw):
    """Keep JWT settings and public keys of function NAME on the platform (no new version).

    The function must be built with `auth.jwt` in mlfn.yaml (that puts the verifier in the
    image); these settings are laid over it and rotate like the keys.

    \b
    Examples:
      mlfn keys jwt digits --issuer https://issuer.example --audience digits --jwks jwks.json
    """
    from mlfn.keys import set_jwt

    out = set_jwt(_target(config_path, kw), name, {"issuer": issuer, "audience": audience, "algorithms":
                                                  list(algorithms), "scope_claim": scope_claim}, jwks_path)
    emit(out, output, lambda r: f"JWT settings of {name}: {r['jwt']}; "
                                f"JWKS keys: {', '.join(map(str, r['jwks_kids'])) or '-'}")
