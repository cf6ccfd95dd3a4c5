#!/usr/bin/env bash
# Prepares, in one git-ignored folder (gpu-bundle/), what the GPU machine lacks for
# scripts/gpu_check.sh, and checks that it fits: the repository and the bundle travel together,
# 64 MiB in all.
#
#   gpu-bundle/wheels/            CPython 3.12 manylinux x86_64 wheels of what the tool needs and the
#                                 GPU machine's Python lacks (its package list: the device tool's
#                                 KINDS.md), pinned to the versions tested here
#   gpu-bundle/llama-cpp-python/  llama-cpp-python's source tree, trimmed to what a CUDA + CPU build
#                                 and scripts/make_model.py use: no other ggml backends, tests, docs,
#                                 examples, tools, git data, one vocabulary GGUF (llama-bpe) and gguf-py
#   gpu-bundle/MANIFEST.txt       what is in it and where it came from
#
# Then it proves the wheels install offline on CPython 3.12 (scripts/gpu_check.sh check-bundle),
# CMake-configures the trimmed tree with the build's flags minus CUDA (scripts/gpu_check.sh
# configure; SKIP_CONFIGURE=1 skips it), prints the bundle's and the repository's sizes together,
# and fails above 64 MiB.
#
#   scripts/gpu_bundle.sh                       # pip downloads (pip's cache makes reruns fast)
#   LLAMA_SRC=/path/llama_cpp_python-0.3.36 scripts/gpu_bundle.sh   # an extracted sdist
#   LLAMA_SDIST=/path/llama_cpp_python-0.3.36.tar.gz scripts/gpu_bundle.sh
#
# PYTHON: a Python with pip and packaging (default: .venv/bin/python if there, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

BUNDLE=${BUNDLE:-gpu-bundle}
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
LLAMA_VERSION=${LLAMA_VERSION:-0.3.36}
LIMIT_MIB=64
# Versions the test suite runs with here. Greenlet: SQLAlchemy 2.1 needs it only for asyncio (an
# extra), brought anyway as the issue lists it (0.6 MB). tqdm is on the GPU machine already;
# brought at the tested version (0.1 MB). setuptools: the tool's build backend, for its --no-deps
# install without build isolation (no network there); 70.1 or newer builds wheels without the
# `wheel` package, so the install does not depend on what the base Python happens to have.
# typing_extensions: there already, but alembic wants 4.12 or newer and that version is unknown;
# pip installs this one only if the one there is older (45 kB).
WHEELS=(optuna==5.0.0 sqlalchemy==2.1.9 alembic==1.20.1 colorlog==6.12.0 mako==1.4.3 greenlet==3.5.6 tqdm==4.70.1 diskcache==5.6.3
        setuptools==84.2.1 typing_extensions==4.16.0)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)

die() { echo "gpu_bundle: $*" >&2; exit 1; }
new=$BUNDLE.new
rm -rf "$new"
mkdir -p "$new/wheels"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$new"' EXIT

echo "== wheels for CPython 3.12, manylinux x86_64"
platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
  "${platform_args[@]}" -d "$new/wheels" "${WHEELS[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) ||
  die "pip download failed (network? a version without a cp312 manylinux wheel?)"
ls -1 "$new/wheels"

echo "== llama-cpp-python $LLAMA_VERSION source tree"
if [[ -n ${LLAMA_SRC:-} ]]; then
  src=$LLAMA_SRC
  echo "from $src"
else
  if [[ -z ${LLAMA_SDIST:-} ]]; then
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/llama-tuner/sdist
    mkdir -p "$cache"
    LLAMA_SDIST=$cache/llama_cpp_python-$LLAMA_VERSION.tar.gz
    [[ -f $LLAMA_SDIST ]] || "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: -d "$cache" "llama-cpp-python==$LLAMA_VERSION" \
      2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) || die "pip download of the llama-cpp-python sdist failed"
  fi
  echo "from $LLAMA_SDIST"
  # Skip the big parts while unpacking (documentation, test models, tools); the rest is picked below.
  tar xzf "$LLAMA_SDIST" -C "$tmp" --exclude='*/.git' --exclude='*/vendor/llama.cpp/docs' \
    --exclude='*/vendor/llama.cpp/tools' --exclude='*/vendor/llama.cpp/examples' --exclude='*/vendor/llama.cpp/tests' \
    --exclude='*/vendor/llama.cpp/models/*.inp' --exclude='*/vendor/llama.cpp/models/*.out'
  src=$(echo "$tmp"/llama_cpp_python-*)
fi
[[ -f $src/vendor/llama.cpp/CMakeLists.txt ]] || die "$src is not a llama-cpp-python source tree (no vendor/llama.cpp)"

dst=$new/llama-cpp-python
L=vendor/llama.cpp
keep=(CMakeLists.txt pyproject.toml README.md LICENSE.md llama_cpp
      $L/CMakeLists.txt $L/LICENSE $L/licenses $L/cmake $L/include $L/src $L/common $L/vendor $L/ggml
      $L/gguf-py/gguf $L/gguf-py/LICENSE $L/gguf-py/pyproject.toml $L/gguf-py/README.md
      $L/models/ggml-vocab-llama-bpe.gguf)
for path in "${keep[@]}"; do
  [[ -e $src/$path ]] || die "$src lacks $path"
  mkdir -p "$dst/$(dirname "$path")"
  cp -a "$src/$path" "$dst/$path"
done
# Not built for CUDA + CPU on x86-64 (ggml adds a backend's folder only when its option is on).
for b in blas cann et hexagon hip metal musa opencl openvino rpc sycl virtgpu vulkan webgpu zdnn zendnn; do
  rm -rf "$dst/$L/ggml/src/ggml-$b"
done
rm -rf "$dst/$L/ggml/src/ggml-cpu/"{kleidiai,spacemit} "$dst/$L/ggml/src/ggml-cpu/arch/"{arm,loongarch,powerpc,riscv,s390,wasm}
# Header-only libraries that only tools/mtmd (multimodal, LLAVA_BUILD=OFF) includes; their
# CMake targets stay, as vendor/CMakeLists.txt adds them unconditionally.
rm -f "$dst/$L/vendor/miniaudio/miniaudio.h" "$dst/$L/vendor/stb/stb_image.h"
# Built libraries and caches of an sdist that was built in place.
rm -rf "$dst/llama_cpp/lib"
find "$dst" \( -name __pycache__ -o -name '*.pyc' -o -name '.git*' \) -prune -exec rm -rf {} +

cat > "$new/MANIFEST.txt" <<EOF
gpu-bundle for scripts/gpu_check.sh, made $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/gpu_bundle.sh
wheels (CPython 3.12, manylinux x86_64): $(cd "$new/wheels" && ls | tr '\n' ' ')
llama-cpp-python $LLAMA_VERSION source, trimmed (from ${LLAMA_SDIST:-$src})
EOF
rm -rf "$BUNDLE"
mv "$new" "$BUNDLE"

bytes() { find "$@" -type f -printf '%s\n' 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
echo "== checks"
BUNDLE=$BUNDLE PYTHON=$PYTHON LLAMA_SRC=$BUNDLE/llama-cpp-python scripts/gpu_check.sh check-bundle
if [[ ${SKIP_CONFIGURE:-0} != 1 ]]; then
  BUNDLE=$BUNDLE scripts/gpu_check.sh configure
fi

# What travels: tracked and untracked-but-not-ignored files, plus the bundle (carried).
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || die "not a git checkout: cannot tell what of it travels"
repo=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}')
wheels=$(bytes "$BUNDLE/wheels")
tree=$(bytes "$BUNDLE/llama-cpp-python")
bundle=$(bytes "$BUNDLE")
total=$((repo + bundle))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo
echo "bundle $BUNDLE: $(mib "$bundle") (wheels $(mib "$wheels"), trimmed llama-cpp-python $(mib "$tree"))"
echo "repository (tracked + untracked, not ignored): $(mib "$repo")"
echo "together: $(mib "$total") of the $LIMIT_MIB MiB the GPU machine takes"
((total <= LIMIT_MIB * 1048576)) || die "over $LIMIT_MIB MiB: trim more"
echo "carry it: the device tool's run(..., carry=[\"$BUNDLE\"])"
