# Sourced by install_llama.sh and install_server.sh: the llama-cpp-python sdist both build from,
# and the cache key of what they build from it.
#
# After `source scripts/llama_sdist.sh PYTHON`: $tmp (removed on exit), quiet CMD... (runs a step,
# shows the end of its output on failure), $sdist (the sdist, from pip's download cache after the
# first time), $ARGS (the CMake flags: LLAMA_CMAKE_ARGS or the default below) and $key (a hash of
# the sdist, $ARGS, the CPU's flags and the compiler: a build is reused only when none changed).
#
# Why the defaults: llama.cpp compiles with -march=native, so a build is only valid on the CPU it
# was made on; the multimodal library (LLAVA_BUILD) is never loaded by the tool; Intel AMX kernels
# crashed (SIGSEGV in ggml_backend_amx_mul_mat) on the embedded gemma-3 model on an AMX Xeon with
# llama-cpp-python 0.3.36. Override LLAMA_CMAKE_ARGS to build differently (e.g. -DGGML_CUDA=on).
PY=${1:?usage: source llama_sdist.sh PYTHON}
SPEC=${LLAMA_SPEC:-$(sed -n 's/^ *"\(llama-cpp-python[^"]*\)".*/\1/p' pyproject.toml | head -1)}
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
ARGS=${LLAMA_CMAKE_ARGS-"-DLLAVA_BUILD=OFF -DCMAKE_C_FLAGS='$NO_AMX' -DCMAKE_CXX_FLAGS='$NO_AMX'"}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/llama-tuner

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
quiet() {  # run a build step; on failure show the end of its output and stop
    "$@" >"$tmp/log" 2>&1 || { grep -v "^WARNING: Location" "$tmp/log" | tail -40 >&2; exit 1; }
}
quiet "$PY" -m pip download --no-deps --no-binary :all: "$SPEC" -d "$tmp"
sdist=$(ls "$tmp"/llama_cpp_python-*.tar.gz)
cpu=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m)
compiler=$( (c++ --version 2>/dev/null || echo none) | head -1)
key=$( { sha256sum "$sdist" | cut -d' ' -f1; echo "$ARGS"; echo "$cpu"; echo "$compiler"; } | sha256sum | cut -c1-16)
