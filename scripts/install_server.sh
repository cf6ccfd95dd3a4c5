#!/usr/bin/env bash
# Installs llama-server, built from the llama.cpp vendored in the llama-cpp-python sdist (the
# library's own commit, the same CMake flags, in the same build: build_llama in llama_sdist.sh),
# beside the venv's Python, where `tune start --engine llama-server` finds it.
#
#   scripts/install_server.sh .venv/bin/python
#
# Usually install_llama.sh has built it already and this copies it in a second; when the cache has
# a wheel but no server (a failed or an older build), it builds both again (about 5 minutes on 2
# cores) and stops with the build's last lines if the server fails.
# The binary and its shared libraries go to .venv/lib/llama-server/, with .venv/bin/llama-server
# a link to it (the libraries are found from the binary's real folder).
set -euo pipefail
source "$(dirname "$0")/llama_sdist.sh" "${1:?usage: install_server.sh PYTHON}"

if [ ! -x "$server_dir/llama-server" ]; then
    build_llama || { echo "error: llama-server did not build (the end of its log is above)" >&2; exit 1; }
fi
venv=$(cd "$(dirname "$PY")/.." && pwd)
rm -rf "$venv/lib/llama-server"
cp -RP "$server_dir" "$venv/lib/llama-server"
ln -sfn ../lib/llama-server/llama-server "$venv/bin/llama-server"
