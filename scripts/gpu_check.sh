#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU and no internet.
#
# Needs: CUDA toolkit (nvcc), cmake, a C++ compiler, Python >= 3.11, and either PyPI access or a
# folder of wheels/sdists (WHEELS=/path: llama-cpp-python's sdist plus this project's dependencies).
# It builds llama-cpp-python with CUDA from the sdist, runs `tune doctor`, a short study (10 trials)
# on the embedded model with the GPU space, and prints decode tok/s of the best trial vs the
# defaults and the guide card, plus VRAM and power.
#
#   scripts/gpu_check.sh                 # uses PyPI
#   WHEELS=/path/to/wheels scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv-gpu}
TRIALS=${TRIALS:-10}
PY=${PYTHON:-python3}
find_links=()
if [[ -n "${WHEELS:-}" ]]; then find_links=(--no-index --find-links "$WHEELS"); fi

echo "== nvidia-smi"; nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv || true
echo "== nvcc"; nvcc --version | tail -1

test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet "${find_links[@]}" --upgrade pip || true
# CUDA build of llama-cpp-python from its sdist (several minutes).
CMAKE_ARGS="-DGGML_CUDA=on ${EXTRA_CMAKE_ARGS:-}" FORCE_CMAKE=1 \
  "$VENV/bin/python" -m pip install --quiet "${find_links[@]}" --no-binary llama-cpp-python "llama-cpp-python>=0.3.36,<0.4"
"$VENV/bin/python" -m pip install --quiet "${find_links[@]}" -e .

echo "== tune doctor"
"$VENV/bin/tune" doctor
"$VENV/bin/python" - <<'PY'
import llama_cpp, sys
if not llama_cpp.llama_supports_gpu_offload():
    sys.exit("llama-cpp-python was built without GPU offload: check nvcc and CMAKE_ARGS")
PY

work=$(mktemp -d)
echo "== study: $TRIALS trials, GPU space, storage $work/gpu.db"
"$VENV/bin/tune" start --trials "$TRIALS" --study gpu-check --storage "sqlite:///$work/gpu.db" --seed 1
"$VENV/bin/tune" export gpu-check --storage "sqlite:///$work/gpu.db" --out "$work/gpu-best.yaml"
echo "== best preset"; cat "$work/gpu-best.yaml"
