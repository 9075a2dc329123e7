"""Deployment targets behind one interface (mlfn.targets.interface.Target), built by
mlfn.targets.factory.get_target: openwhisk/, knative/, local/ (docs/architecture.md)."""
