# SlotServe: every target creates what it needs; `make test` works on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision are installed first and pinned together (timm needs torchvision, and
# PyPI's torchvision only loads beside the torch build it was made for); letting pip resolve
# torch pulls whatever release is newest.
TORCH ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= cpu,dev
CHECKPOINT ?= models/slotserve-shapes/model.safetensors
# Keep freed memory in the process: halves CPU step time here (see training/runtime.py).
export MALLOC_MMAP_THRESHOLD_ = 4000000000
export MALLOC_TRIM_THRESHOLD_ = 100000000000

.PHONY: help venv triton-venv system-deps test lint format audit serve proto build loadtest \
	bench bench-triton memory soak train train-ablation train-photos evaluate evaluate-photos demo \
	sweep clean

venv: $(VENV)/.installed

# An environment's stamp holds the pins it was built with; when they differ from this file's
# (a pin was bumped, or set on the command line) the stamp is out of date and the environment is
# built again, so an updated checkout never runs against an old torch or onnxruntime. EXTRAS
# is not a pin: a .venv built with EXTRAS=gpu,dev stays as it is under a plain `make serve`
# (switching extras takes `rm -rf .venv`, as the README says).
VENV_PINS := $(TORCH)
ifneq ($(shell cat $(VENV)/.installed 2>/dev/null),$(VENV_PINS))
.PHONY: $(VENV)/.installed
endif

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	echo '$(VENV_PINS)' > $@

# A real Triton server (tests/test_triton_server.py, `make bench-triton`), in its own environment:
# PyPI's nvidia-pytriton ships tritonserver with the Python backend (no onnxruntime backend), and
# its stub is built against numpy 1.x, which the project's numpy 2.x cannot share. The stub for
# this Python goes into the backend's folder; the base interpreter's libpython goes into lib/,
# which Triton puts on the stub's LD_LIBRARY_PATH when the model's EXECUTION_ENV_PATH names this
# environment, so the stub embeds the interpreter the environment was made with (docs/triton.md).
TRITON_VENV ?= .venv-triton
# What model.py imports; tritonserver itself needs none of nvidia-pytriton's Python dependencies.
TRITON_PACKAGES ?= numpy==1.26.4 onnxruntime==1.32.0
TRITON_SERVER ?= nvidia-pytriton==0.7.0
TPY := $(TRITON_VENV)/bin/python

TRITON_PINS := $(TRITON_PACKAGES) $(TRITON_SERVER)
ifneq ($(shell cat $(TRITON_VENV)/.installed 2>/dev/null),$(TRITON_PINS))
.PHONY: $(TRITON_VENV)/.installed
endif

triton-venv: $(TRITON_VENV)/.installed

$(TRITON_VENV)/.installed:
	rm -rf $(TRITON_VENV)
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TPY) -m pip install --quiet --upgrade pip
	$(TPY) -m pip install --quiet $(TRITON_PACKAGES)
	$(TPY) -m pip install --quiet --no-deps $(TRITON_SERVER)
	@set -e; \
	site=$$($(TPY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))'); \
	ver=$$($(TPY) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	cp "$$site/pytriton/tritonserver/python_backend_stubs/$$ver/triton_python_backend_stub" \
	  "$$site/pytriton/tritonserver/backends/python/"; \
	lib=$$($(TPY) -c 'import sysconfig as s; print(s.get_config_var("LIBDIR") + "/" + \
	  (s.get_config_var("INSTSONAME") or ""))'); \
	[ -f "$$lib" ] || { echo "$(PYTHON) has no shared libpython ($$lib): the stub cannot embed it" >&2; \
	  exit 1; }; \
	ln -sf "$$lib" $(TRITON_VENV)/lib/
	echo '$(TRITON_PINS)' > $@

# Debian packages the tests use: prometheus + promtool (the monitoring tests run them), and the
# photo cut-outs and wallpaper photographs that photo scenes are made of (training/data/photos.py).
PHOTO_PACKAGES ?= tuxpaint-stamps-default plasma-workspace-wallpapers mate-backgrounds \
	lomiri-wallpapers-16.04
system-deps:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null && \
	  [ -d /usr/share/tuxpaint/stamps/animals ] && [ -d /usr/share/wallpapers/Volna ] && \
	  [ -d /usr/share/backgrounds/mate/nature ] && \
	  [ -f /usr/share/backgrounds/sunset_by_Aitzol_Berasategi.jpg ] || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    prometheus $(PHOTO_PACKAGES) >/dev/null; }

test: venv triton-venv system-deps
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

# Pack the service, the contract and the default bundle into a bento, with no network: the
# packages are listed, not locked (bentofile.yaml). BentoML 1.4's build pip-installs `uv` from
# the index when it is missing (even though it never runs it here): the dev extra brings it,
# and PIP_NO_INDEX turns a missing one into an error instead of a download.
build: venv
	PIP_NO_INDEX=1 $(VENV)/bin/bentoml build .

# Known vulnerabilities in the installed dependencies, from PyPI's advisory data. Fails on any
# vulnerability not listed with a reason in .pip-audit-ignore, and (--strict) on any package it
# cannot look up: no data is a failure, not a pass. Not in CI: see README, "Reliability".
audit: venv
	$(VENV)/bin/pip-audit --strict --vulnerability-service pypi --progress-spinner off \
	  $$(grep -v '^#' .pip-audit-ignore | awk 'NF {print "--ignore-vuln", $$1}')

# Raw model against served model in one run: JSON, Markdown and plots under reports/bench.
bench: venv
	$(PY) -m loadtests.bench --out reports/bench

# SlotServe and a real Triton server (Python backend, onnxruntime) on the same bundle, interleaved
# in one run at 1, 4, 16 and 64 users over HTTP and gRPC: JSON, Markdown and a plot in reports/triton.
bench-triton: venv triton-venv
	$(PY) -m loadtests.triton_peer --out reports/triton

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

# The shipped architecture on photo-object scenes, from scratch (see docs/photos.md).
train-photos: venv system-deps
	$(PY) -m training train --config photos --no-resume run.out_dir=runs/photos

# Photo-object scenes (training stamps and held-out stamps; square and non-square): the shipped
# model beside k-means on RGB and on frozen EfficientNet-Lite0 features, as JSON lines.
evaluate-photos: venv system-deps
	@for v in photos photos-unseen; do for hw in "128 128" "96 160"; do set -- $$hw; \
	  for m in kmeans kmeans-features; do \
	    $(PY) -m training evaluate --method $$m --variant $$v --scenes 512 --seed 12345 \
	      --size $$1 --width $$2 --slots 7 --json; \
	  done; \
	  $(PY) -m training evaluate --checkpoint $(CHECKPOINT) --variant $$v --scenes 512 \
	    --seed 12345 --size $$1 --width $$2 --json; \
	done; done

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

help:
	@echo "make TARGET (targets that run Python create .venv first; README.md has the details)"
	@echo "  help            this list"
	@echo "  venv            .venv: torch pinned, then the project (EXTRAS=cpu,dev; gpu,dev on a GPU)"
	@echo "  triton-venv     .venv-triton: PyPI's tritonserver for the Triton test and bench-triton"
	@echo "  system-deps     Debian packages: prometheus (promtool), the photo stamps and wallpapers"
	@echo "  test            ruff, then the test suite"
	@echo "  lint            ruff check and format check"
	@echo "  format          ruff fixes and formats the code"
	@echo "  audit           pip-audit of the installed packages (needs PyPI's advisory data)"
	@echo "  serve           serve the shipped model: HTTP :3000, gRPC :50051"
	@echo "  proto           regenerate the gRPC code from the proto"
	@echo "  build           pack the service and the default bundle into a bento (no network)"
	@echo "  loadtest        one minute of locust users against a running make serve"
	@echo "  bench           raw and served benchmark into reports/bench (committed)"
	@echo "  bench-triton    SlotServe beside a real Triton server into reports/triton (committed)"
	@echo "  memory          model-worker memory against batch size into reports/memory (committed)"
	@echo "  soak            overload, 10-minute soak and kill -9 into reports/reliability (committed)"
	@echo "  train           reproduce the shipped checkpoint from scratch into runs/default"
	@echo "  train-ablation  the same budget with top-down off into runs/no_topdown"
	@echo "  train-photos    the photo recipe (frozen Lite0 features) into runs/photos"
	@echo "  evaluate        the shipped model and the baselines on 512 scenes of each variant"
	@echo "  evaluate-photos the shipped model and the baselines on photo scenes"
	@echo "  demo            evaluate and draw the shipped model's masks into runs/demo"
	@echo "  sweep           one model per codebook size, perplexity and usage"
	@echo "  clean           remove .venv, runs/ and tool caches"
