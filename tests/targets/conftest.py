import os

import pytest


@pytest.fixture(autouse=True)
def _no_openwhisk_action_env(monkeypatch):
    """Target tests read credentials the way wsk does, and __OW_API_HOST/__OW_API_KEY
    (what an action sees) take part in that. The in-process runtime tests set them on
    /init, as an action container would, so clear them here."""
    for key in list(os.environ):
        if key.startswith("__OW_"):
            monkeypatch.delenv(key)
