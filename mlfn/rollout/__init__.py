"""Progressive delivery (`mlfn rollout`): move an alias from its stable version to a
candidate in steps, judge the candidate on its OWN numbers (activation records on
OpenWhisk/local, Prometheus on Knative) and on its answers to a probe set, and promote it
or send the traffic back to stable. The state lives with the alias on the platform.

    settings.py   RolloutSettings, and the parsers of "60s", "250ms", "1%", "10,25,50,100"
    state.py      RolloutState / Check, kept in Alias.rollouts (AliasRecord.rollouts)
    metrics.py    Window; ActivationMetrics, PrometheusMetrics
    quality.py    the probe set and the quality gate
    load.py       synthetic load (--load DIR --rate N)
    runner.py     RolloutRun: the loop; EXIT_CODES
    api.py        start / resume / status / abort (what the commands call)
"""
from mlfn.rollout.api import RolloutStatus, abort, begin, metrics_for, resume, run, start, status
from mlfn.rollout.runner import EXIT_CODES, RolloutResult
from mlfn.rollout.settings import RolloutSettings, resolve
from mlfn.rollout.state import ABORTED, INCONCLUSIVE, PROMOTED, ROLLED_BACK, RUNNING

__all__ = ["ABORTED", "EXIT_CODES", "INCONCLUSIVE", "PROMOTED", "ROLLED_BACK", "RUNNING", "RolloutResult",
           "RolloutSettings", "RolloutStatus", "abort", "begin", "metrics_for", "resolve", "resume", "run", "start",
           "status"]
