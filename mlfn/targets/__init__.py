"""Deployment targets behind one interface (mlfn.targets.base.Target)."""
