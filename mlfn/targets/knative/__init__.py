"""Knative Serving: the Kubernetes API client and its dry-run wrapper (client.py), versions
and aliases <-> Service and Revisions (codec.py), the rendered Service (manifest.py), its
checks (validate.py), the target and `knative_target` (target.py). Importing stays light:
the kubernetes client loads on first use."""
