"""Apache OpenWhisk: the REST client and its dry-run wrapper (client.py), versions and
aliases <-> entities (codec.py), the target and `openwhisk_target` (target.py), credentials
found the way `wsk` finds them (wskprops.py)."""
