# `make test` builds the environment from nothing and runs every check CI runs;
# `make run` builds only what serving needs (RUN_EXTRAS) and serves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Serving: the service, its decoders and DICOM codecs, ONNX Runtime for the CPU. No torch,
# no test, lint, docs, training or Dask packages (about 630 MiB).
RUN_EXTRAS ?= cpu,service,dicom
# Everything: serving plus Dask, OpenSlide, the training module (torch), test and docs tools.
EXTRAS ?= $(RUN_EXTRAS),gateway,dask,openslide,dicom-wsi,training,test,docs

.PHONY: venv run-venv system-deps test test-random lint typecheck docs unit bench run clean \
	model docker-smoke

# The whole environment, in the same .venv that `make run` starts.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# The CPU wheel of torch first: the `training` extra pins the same version,
	# so pip is satisfied and never reaches for the CUDA build.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[$(EXTRAS)]"
	touch $@ $(VENV)/.installed-run

# What serving needs; already there when the whole environment is.
$(VENV)/.installed-run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -e ".[$(RUN_EXTRAS)]"
	touch $@

venv: $(VENV)/.installed
run-venv: $(VENV)/.installed-run

# Debian's packages for the PACS end-to-end tests (tests/deploy/test_orthanc_e2e.py,
# tests/gateway/): Orthanc with its Python and DICOMweb plugins; dcmtk's storescu, echoscu and storescp (a
# modality and a destination PACS); dicom3tools' dciodvfy, which validates every DICOM SEG
# the tests make; openssl, which makes the DICOM TLS test's certificates. Installed when missing and run as root (CI); otherwise those
# tests skip, saying so (in CI, CI=true, they fail instead).
SYSTEM_PACKAGES := orthanc orthanc-python orthanc-dicomweb dcmtk dicom3tools openssl
system-deps:
	@if dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian packages: $(SYSTEM_PACKAGES)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; \
	else \
		echo "NOTE: $(SYSTEM_PACKAGES) missing (sudo make system-deps): the PACS tests will skip"; \
	fi

lint: venv
	$(PY) -m ruff check app training bench tests deploy
	$(PY) -m ruff format --check app training bench tests deploy
	$(VENV)/bin/lint-imports  # the layer rules of pyproject.toml [tool.importlinter]

typecheck: venv
	$(PY) -m mypy app training deploy

# The manual (docs/, mkdocs-material), built offline into build/site; --strict turns a broken
# link or a page missing from the nav into an error, so `make test` keeps the docs whole.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

unit: venv system-deps
	$(PY) -m pytest

test: lint typecheck docs unit

# The whole suite in a random order (pytest-randomly; `make unit` keeps the files' order): a
# test that passes alone and fails after another shows here. SEED=N repeats an order.
SEED ?= $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
test-random: venv system-deps
	$(PY) -m pytest -p randomly --randomly-seed=$(SEED)

bench: venv
	$(PY) -m bench.inference

# Serve UNET_MODEL_PATH if set, else the default model/unet.onnx.
HOST ?= 0.0.0.0
PORT ?= 8000
# deploy/serve.py is uvicorn's command line that exits 0 after a graceful SIGTERM; h11 bounds
# the header block (16 KiB); ONNX Runtime sends no telemetry.
UVICORN := ORT_DISABLE_TELEMETRY=1 $(PY) deploy/serve.py app.main:app --host $(HOST) --port $(PORT) \
	--http h11 --timeout-graceful-shutdown 20 --no-access-log
run: run-venv
	@if [ -n "$$UNET_MODEL_PATH" ]; then \
		echo "serving $$UNET_MODEL_PATH (UNET_MODEL_PATH) on http://$(HOST):$(PORT)"; \
	elif [ -f model/unet.onnx ]; then \
		echo "serving the default model model/unet.onnx on http://$(HOST):$(PORT)"; \
	else \
		echo "model/unet.onnx is missing: 'git checkout model/unet.onnx', or set UNET_MODEL_PATH"; \
		exit 2; \
	fi
	$(UVICORN)

# Build the CPU image with podman (no Docker engine needed; see
# ../shared/tools/container-smoke/README.md, run its make-base-image.sh once),
# run it read-only as its non-root user, wait for the HEALTHCHECK, segment one
# PNG, stop it with SIGTERM and print the image size. Not part of `test`.
docker-smoke:
	deploy/docker-smoke.sh

# The shipped default model (model/MODEL_CARD.md): 40 epochs at lr 1e-3, 10 more validated every
# epoch (at 1e-3 too: that is how the shipped file was trained, see the card),
# export of the best validation epoch, calibration (threshold, objects recipe), evaluation
# against the Otsu baseline, the INT8 variant (written if it passes its gate). ~42 min on 2 cores.
ISBI ?= ../shared/data/isbi2012
RUN ?= runs/isbi-b16
model: venv
	$(PY) -m training train --data $(ISBI)/train --out $(RUN) --classes background,membrane \
		--foreground-value 0 --objects background --base-channels 16 --batch-norm \
		--epochs 40 --val-every 2 --name unet-isbi2012-membranes --version 1.0.0
	$(PY) -m training train --out $(RUN) --resume --epochs 50 --val-every 1
	$(PY) -m training export --checkpoint $(RUN)/best.pt --out model/unet.onnx
	$(PY) -m training calibrate --model model/unet.onnx --data $(ISBI)/train
	$(PY) -m training evaluate --model model/unet.onnx --data $(ISBI)/train --baseline otsu
	$(PY) -m training quantize --model model/unet.onnx --data $(ISBI)/train --out model/unet-int8.onnx
	cp $(RUN)/curves.png model/training_curves.png

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache .hypothesis
