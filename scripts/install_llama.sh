#!/usr/bin/env bash
# Builds llama-cpp-python from its sdist once per (sdist, CMAKE_ARGS, CPU, compiler) and installs it.
#
#   scripts/install_llama.sh .venv/bin/python
#
# Why not just `pip install llama-cpp-python`: llama.cpp compiles with -march=native, and pip's
# wheel cache is keyed by the download URL only. A wheel built with other CMAKE_ARGS, or on another
# CPU, would be reused silently. So the wheel goes into a wheelhouse whose folder name is a hash of
# everything that changes the binary (scripts/llama_sdist.sh), and is rebuilt when any of it changes.
# LLAMA_CMAKE_ARGS (default in llama_sdist.sh) builds only what the tool uses: libllama and ggml.
# The same build makes llama-server (build_llama); scripts/install_server.sh installs it.
set -euo pipefail
source "$(dirname "$0")/llama_sdist.sh" "${1:?usage: install_llama.sh PYTHON}"

if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    # The library is what `make tune` needs: a server that fails to build only warns here
    # (install_server.sh, which `make test` runs, stops on it).
    build_llama || echo "warning: llama-server did not build (the wheel did); scripts/install_server.sh retries" >&2
fi
quiet "$PY" -m pip install --force-reinstall --no-deps "$wheels"/llama_cpp_python-*.whl
# llama-cpp-python's own dependencies (numpy, diskcache, jinja2, typing-extensions).
quiet "$PY" -m pip install "$wheels"/llama_cpp_python-*.whl
