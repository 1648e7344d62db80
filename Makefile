# The two commands of the README: `make demo` (main job on the embedded default) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: demo test test-slow install clean app

$(BIN)/hypersd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# the CPU build of torch (pinned; the machine image carries its wheel), before anything that needs torch
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[test]"
	# Debian's chromium for the browser tests of `hypersd app` (Playwright drives it; nothing is downloaded)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -q && apt-get install -y -q chromium; } \
		|| echo "chromium is not installed: the browser tests will be skipped (apt-get install chromium)"
	touch $@

install: $(BIN)/hypersd

demo: install
	$(BIN)/hypersd demo --out runs/demo

app: install
	$(BIN)/hypersd app

# two pytest workers of one torch thread each: on 2 cores this halves the wall time (14.5 -> 7.7 min measured);
# two workers of two threads each would thrash (engineering notes)
test: install
	OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q -n 2 --durations=15

test-slow: install
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs
