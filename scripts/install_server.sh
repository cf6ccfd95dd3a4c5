#!/usr/bin/env bash
# Builds llama-server from the llama.cpp vendored in the llama-cpp-python sdist (the library's own
# commit, the same CMake flags) once per (sdist, flags, CPU, compiler), and installs it beside the
# venv's Python, where `tune start --engine llama-server` finds it.
#
#   scripts/install_server.sh .venv/bin/python
#
# Static (no shared libraries to find at run time), without the web UI, HTTPS or curl: the tool
# talks to it over 127.0.0.1 only. About 7 minutes on 2 cores, the first time on a machine.
set -euo pipefail
source "$(dirname "$0")/llama_sdist.sh" "${1:?usage: install_server.sh PYTHON}"
server="${LLAMA_SERVER_HOUSE:-$CACHE/server}/$key/llama-server"

if [ ! -x "$server" ]; then
    echo "building llama-server from $(basename "$sdist")'s llama.cpp (CMake flags: $ARGS); about 7 minutes on 2 cores, once per machine and flags"
    start=$(date +%s)
    tar xzf "$sdist" -C "$tmp"
    src=$(ls -d "$tmp"/llama_cpp_python-*/vendor/llama.cpp)
    fixed=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON
           -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF
           -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF)
    eval "given=($ARGS)"  # LLAMA_CMAKE_ARGS, quoted as for pip's CMAKE_ARGS
    quiet cmake -S "$src" -B "$tmp/build" "${fixed[@]}" "${given[@]}"
    quiet cmake --build "$tmp/build" --target llama-server -j "$(nproc)"
    mkdir -p "$(dirname "$server")"
    mv "$tmp/build/bin/llama-server" "$server"
    echo "built in $(( $(date +%s) - start )) s -> $server"
fi
install -m 755 "$server" "$(dirname "$PY")/llama-server"
