"""Package layout: the build side `mlfn` lives at the top level, the function side
`mlfn_runtime` under actions/ (it is copied into every image), and the Jinja2
templates under templates/ ship as the package `mlfn.templates`."""
from setuptools import find_packages, setup

runtime = ["mlfn_runtime"] + [
    "mlfn_runtime." + p for p in find_packages("actions/mlfn_runtime")
]

setup(
    packages=find_packages(include=["mlfn", "mlfn.*"]) + runtime + ["mlfn.templates"],
    package_dir={"mlfn_runtime": "actions/mlfn_runtime", "mlfn.templates": "templates"},
    package_data={"mlfn.templates": ["*.j2", "*.yaml", "*.py", "knative/*.j2", "knative/*.yaml", "openwhisk/*.j2"],
                  "mlfn_runtime.oip_grpc": ["*.desc"]},
)
