#!/usr/bin/env bash
# Builds llama-cpp-python from its sdist once per (sdist, CMAKE_ARGS, CPU, compiler) and installs it.
#
#   scripts/install_llama.sh .venv/bin/python
#
# Why not just `pip install llama-cpp-python`: llama.cpp compiles with -march=native, and pip's
# wheel cache is keyed by the download URL only. A wheel built with other CMAKE_ARGS, or on another
# CPU, would be reused silently. So the wheel goes into a wheelhouse whose folder name is a hash of
# everything that changes the binary, and is rebuilt when any of it changes.
#
# LLAMA_CMAKE_ARGS (default below) builds only what the tool uses: libllama and ggml, without the
# multimodal library (LLAVA_BUILD) the tool never loads; and without Intel AMX kernels, which
# crashed (SIGSEGV in ggml_backend_amx_mul_mat) on the embedded gemma-3 model on an AMX Xeon with
# llama-cpp-python 0.3.36. Override LLAMA_CMAKE_ARGS to build differently (e.g. -DGGML_CUDA=on).
set -euo pipefail

PY=${1:?usage: install_llama.sh PYTHON}
SPEC=${LLAMA_SPEC:-$(sed -n 's/^ *"\(llama-cpp-python[^"]*\)".*/\1/p' pyproject.toml | head -1)}
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
ARGS=${LLAMA_CMAKE_ARGS-"-DLLAVA_BUILD=OFF -DCMAKE_C_FLAGS='$NO_AMX' -DCMAKE_CXX_FLAGS='$NO_AMX'"}
HOUSE=${LLAMA_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/llama-tuner/wheels}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
quiet() {  # run a pip step; on failure show the end of its output and stop
    "$@" >"$tmp/log" 2>&1 || { grep -v "^WARNING: Location" "$tmp/log" | tail -40 >&2; exit 1; }
}
# The sdist (from pip's download cache after the first time): its hash is part of the key.
quiet "$PY" -m pip download --no-deps --no-binary :all: "$SPEC" -d "$tmp"
sdist=$(ls "$tmp"/llama_cpp_python-*.tar.gz)
cpu=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m)
compiler=$( (c++ --version 2>/dev/null || echo none) | head -1)
key=$( { sha256sum "$sdist" | cut -d' ' -f1; echo "$ARGS"; echo "$cpu"; echo "$compiler"; } | sha256sum | cut -c1-16)
wheels="$HOUSE/$key"

if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "building $(basename "$sdist") (CMAKE_ARGS: $ARGS); a few minutes, once per machine and flags"
    start=$(date +%s)
    mkdir -p "$wheels"
    quiet env CMAKE_ARGS="$ARGS" "$PY" -m pip wheel --no-deps --no-cache-dir "$sdist" -w "$tmp/built"
    mv "$tmp"/built/llama_cpp_python-*.whl "$wheels"/
    echo "built in $(( $(date +%s) - start )) s -> $wheels"
fi
quiet "$PY" -m pip install --force-reinstall --no-deps "$wheels"/llama_cpp_python-*.whl
# llama-cpp-python's own dependencies (numpy, diskcache, jinja2, typing-extensions).
quiet "$PY" -m pip install "$wheels"/llama_cpp_python-*.whl
