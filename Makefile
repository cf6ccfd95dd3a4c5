# Two commands set everything up on a fresh machine:
#   make tune   create .venv, install, run a 50-trial study on the embedded model
#   make test   create .venv, install, build llama-server, run the test suite
#   make server build llama-server (for `tune start --engine llama-server`; make test does it)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVER := $(BIN)/llama-server
TUNE_ARGS ?= --trials 50

.PHONY: tune test install server clean system-deps

install: $(STAMP)

# Re-install only when the project's dependencies change. llama-cpp-python is built first, by
# scripts/install_llama.sh (only what the tool uses; LLAMA_CMAKE_ARGS overrides its flags).
$(STAMP): pyproject.toml scripts/install_llama.sh scripts/llama_sdist.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	bash scripts/install_llama.sh $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# llama-server, built with the wheel from the same sdist (build_llama in scripts/llama_sdist.sh),
# installed into .venv by scripts/install_server.sh.
server: $(SERVER)

$(SERVER): $(STAMP) scripts/install_server.sh scripts/llama_sdist.sh
	bash scripts/install_server.sh $(BIN)/python

tune: $(STAMP)
	$(BIN)/tune start $(TUNE_ARGS)

# pytest exits 5 when it collects no test; make treats any non-zero exit as failure.
test: $(STAMP) $(SERVER) system-deps
	$(BIN)/python -m pytest

# chromium (browser checks) and postgresql (many-workers test), from Debian.
system-deps:
	bash scripts/system_deps.sh

clean:
	rm -rf $(VENV) *.egg-info
