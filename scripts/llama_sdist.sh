# Sourced by install_llama.sh and install_server.sh: the llama-cpp-python sdist both build from,
# the cache key of what they build from it, and build_llama, the one build that makes both.
#
# After `source scripts/llama_sdist.sh PYTHON`: $tmp (removed on exit), quiet CMD... (runs a step,
# shows the end of its output on failure), $sdist (the sdist, from pip's download cache after the
# first time), $ARGS (the CMake flags: LLAMA_CMAKE_ARGS or the default below), $key (a hash of
# the sdist, $ARGS, the CPU's flags and the compiler: a build is reused only when none changed),
# $wheels (the wheelhouse folder for $key) and $server_dir (llama-server and its libraries for $key).
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
wheels="${LLAMA_WHEELHOUSE:-$CACHE/wheels}/$key"
server_dir="${LLAMA_SERVER_HOUSE:-$CACHE/server}/$key"

# The wheel, then llama-server in the same CMake build folder: the server links the libllama and
# ggml the wheel just compiled instead of compiling them a second time (on a 2-core AMD EPYC VM:
# 155 s + 138 s, where two separate builds took 212 s + 404 s). The server is left without the
# web UI, HTTPS or curl: the tool talks to it over 127.0.0.1 only. Its shared libraries go beside
# it ($ORIGIN in its run path), so the folder works wherever it is copied.
# Returns non-zero when the server could not be built; the wheel is in $wheels by then.
build_llama() {
    echo "building $(basename "$sdist") and llama-server from its llama.cpp (CMake flags: $ARGS);" \
         "about 5 minutes on 2 cores, once per machine and flags"
    local start src build given
    start=$(date +%s)
    tar xzf "$sdist" -C "$tmp"
    src=$(ls -d "$tmp"/llama_cpp_python-*/) && src=${src%/}
    build="$tmp/build"
    # '$ORIGIN' reaches CMake unexpanded: the libraries are found beside the binary.
    quiet env CMAKE_ARGS="$ARGS -DCMAKE_BUILD_RPATH=\$ORIGIN" \
        "$PY" -m pip wheel --no-deps --no-cache-dir "$src" -w "$tmp/built" -C build-dir="$build"
    # Called after `||`, where set -e is off: each step that must not fail says so.
    mkdir -p "$wheels" && rm -f "$wheels"/llama_cpp_python-*.whl &&
        mv "$tmp"/built/llama_cpp_python-*.whl "$wheels"/ || exit 1
    echo "  wheel built in $(( $(date +%s) - start )) s -> $wheels"
    eval "given=($ARGS)"  # LLAMA_CMAKE_ARGS, quoted as for pip's CMAKE_ARGS
    (quiet cmake -S "$src" -B "$build" "${given[@]}" -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
        -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF &&
     quiet cmake --build "$build" --target llama-server -j "$(nproc)") || return 1
    rm -rf "$server_dir" && mkdir -p "$server_dir" &&
        cp -P "$build"/bin/llama-server "$server_dir"/ &&
        find "$build"/bin -maxdepth 1 -name '*.so*' -exec cp -P {} "$server_dir"/ \; || return 1
    echo "  llama-server built, $(( $(date +%s) - start )) s in all -> $server_dir"
}
