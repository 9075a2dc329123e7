# The two commands a new machine needs (see README.md):
#   make demo   train the digits sample, quantize, build, run, invoke, deploy with a canary
#   make test   install and start what the tests need, then run them
VENV ?= .venv
MLFN := $(VENV)/bin/mlfn
PY := $(VENV)/bin/python

.PHONY: demo test setup base registry clean

setup:
	scripts/setup.sh all,test

base: setup
	$(MLFN) base build

registry:
	scripts/registry.sh start

demo: base
	scripts/demo.sh

test: base registry
	$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

clean:
	-$(MLFN) run --stop -c samples/digits
	-$(MLFN) local down
	rm -rf .mlfn samples/digits/.mlfn
