# SlotServe: every target creates what it needs; `make test` works on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first and pinned: letting pip resolve it pulls gigabytes of CUDA wheels.
TORCH ?= torch==2.13.0
EXTRAS ?= cpu,dev
CHECKPOINT ?= models/slotserve-shapes/model.safetensors
# Keep freed memory in the process: halves CPU step time here (see training/runtime.py).
export MALLOC_MMAP_THRESHOLD_ = 4000000000
export MALLOC_TRIM_THRESHOLD_ = 100000000000

.PHONY: venv system-deps test lint format audit serve proto build loadtest bench memory soak train \
	train-ablation evaluate demo sweep clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

# Debian packages the tests use: prometheus + promtool (the monitoring tests run them).
system-deps:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    prometheus >/dev/null; }

test: venv system-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

# The main job: serve the shipped model (HTTP :3000, gRPC :50051). Settings: SLOTSERVE_* env.
serve: venv
	$(VENV)/bin/bentoml serve

# Regenerate the gRPC code after editing service/rpc/slotserve/v1/slotserve.proto.
proto: venv
	$(PY) -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. --pyi_out=. \
	  service/rpc/slotserve/v1/slotserve.proto

# Pack the service, the contract and the default bundle into a bento (offline).
build: venv
	$(VENV)/bin/bentoml build .

# Known vulnerabilities in the installed dependencies, from PyPI's advisory data. Fails on any
# vulnerability not listed with a reason in .pip-audit-ignore, and (--strict) on any package it
# cannot look up: no data is a failure, not a pass. Not in CI: see README, "Reliability".
audit: venv
	$(VENV)/bin/pip-audit --strict --vulnerability-service pypi --progress-spinner off \
	  $$(grep -v '^#' .pip-audit-ignore | awk 'NF {print "--ignore-vuln", $$1}')

# Raw model against served model in one run: JSON, Markdown and plots under reports/bench.
bench: venv
	$(PY) -m loadtests.bench --out reports/bench

# Model-worker memory and speed against batch size, per onnxruntime memory setting.
memory: venv
	$(PY) -m loadtests.memory --out reports/memory

# Overload (4x saturation, 1 min), 10-minute soak, kill -9 of each worker: reports/reliability.
soak: venv
	$(PY) -m loadtests.reliability all --out reports/reliability --minutes 10

# A one-minute locust run against a running `make serve` (HTTP + gRPC users, SLO exit code).
loadtest: venv
	$(VENV)/bin/locust -f loadtests/locustfile.py --headless -u 8 -r 4 -t 1m --only-summary \
	  --host http://127.0.0.1:3000 --grpc-target 127.0.0.1:50051

# Reproduce the shipped checkpoint from scratch (see README for time and figures).
train: venv
	$(PY) -m training train --config default --no-resume run.out_dir=runs/default

# The same budget with the top-down pathway off (plain Slot Attention): the ablation.
train-ablation: venv
	$(PY) -m training train --config no_topdown --no-resume run.out_dir=runs/no_topdown

evaluate: venv
	@for v in solid textured; do \
	  for m in model colour kmeans; do \
	    $(PY) -m training evaluate --checkpoint $(CHECKPOINT) --method $$m --variant $$v \
	      --scenes 512 --seed 12345 --json; \
	  done; \
	done

# Evaluate the shipped model beside the baselines and draw its masks (runs/demo).
demo: venv
	$(PY) -m training demo --checkpoint $(CHECKPOINT) --out runs/demo

sweep: venv
	$(PY) -m training sweep-codebook --sizes 8,16,32,64 run.max_minutes=10

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
