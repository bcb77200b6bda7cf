# vla_mpc: pip-only workflow. Every target isolates ROS 2 traffic to this machine unless the caller
# already chose (ROS_AUTOMATIC_DISCOVERY_RANGE / ROS_DOMAIN_ID).
SHELL := /bin/bash
PYTHON_BOOT ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vla_mpc-setup-stamp

export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export ROS_DOMAIN_ID ?= 37
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

DEMO_ARGS ?=
BENCH_SUITES ?= all
TEST_ARGS ?=

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py package.xml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: setup
	$(PY) -m vla_mpc.demo $(DEMO_ARGS)

test: setup
	$(PY) -m pytest $(TEST_ARGS)

bench: setup
	$(PY) -m vla_mpc.bench $(BENCH_SUITES)

clean:
	rm -rf $(VENV) build install log .pytest_cache
