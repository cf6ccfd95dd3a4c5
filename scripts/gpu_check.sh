#!/usr/bin/env bash
# GPU check, sized for a GPU machine lent for minutes: no network, 64 MiB of files brought,
# 10 minutes a command. Two commands, run back to back on the same machine:
#
#   scripts/gpu_check.sh setup   (a) a venv (--system-site-packages) in gpu-work/, the bundle's
#                                wheels installed offline, llama-cpp-python built with CUDA for this
#                                GPU's architecture only (all cores, build dir kept in gpu-work/build
#                                so a rerun is incremental), the tool installed --no-deps
#   scripts/gpu_check.sh run     (b) an 8B-shaped Q4_K_M model made here (scripts/make_model.py),
#                                `tune doctor`, a short speed-only study with the GPU space on the
#                                default workload, the preset exported, benchmarks/compare_presets.py
#                                (defaults, guide card, tuned), NVML telemetry of the tuned preset,
#                                the roofline fraction; all under $GPU_OUT (default gpu-out/), with
#                                summary.json and summary.md (device, date, model shape, figures)
#
# Bring with it: the repository and gpu-bundle/ (scripts/gpu_bundle.sh makes it; under 64 MiB
# together). On the device tool: carry ["gpu-bundle"], and PACK_TO=$OUT to get the results back
# (gpu-out.tar.gz, summary.json, summary.md).
#
# Rehearsal on a machine without a GPU (the same steps, in the same order):
#
#   scripts/gpu_check.sh rehearse        = rehearse-setup, then rehearse-run
#   scripts/gpu_check.sh rehearse-setup  (a) without CUDA: the venv, the bundle's wheels checked to
#                                        install offline on CPython 3.12 (dependency closure + pip
#                                        --dry-run for cp312 manylinux), the trimmed source tree
#                                        CMake-configured with the same flags minus CUDA (FULL_BUILD=1:
#                                        also built and installed: 162 s on 2 cores), the tool
#                                        installed --no-deps
#   scripts/gpu_check.sh rehearse-run    (b) on a tiny made model, --space cpu, small workload and
#                                        few trials, into gpu-out-rehearsal/
#   scripts/gpu_check.sh configure       CMake-configure the bundle's tree (used by gpu_bundle.sh)
#   scripts/gpu_check.sh check-bundle    the offline-install proof alone
#
# Settings (environment): PYTHON (base interpreter, default python3), BUNDLE (gpu-bundle), WORK
# (gpu-work, or gpu-work/rehearsal), GPU_OUT (gpu-out, or gpu-out-rehearsal), LLAMA_SRC (the
# llama-cpp-python source tree make_model.py reads; default the bundle's), SHAPE (8b; tiny in
# rehearsal), QTYPE (Q4_K_M), MODEL (use this GGUF instead of making one), TRIALS (12; 4), SPACE
# (empty = the tool's choice, which must be the GPU space; cpu in rehearsal), PROMPT_TOKENS,
# GEN_TOKENS, REPEATS (empty = the tool's default workload; 32/16/3 in rehearsal), CONFIRM_ROUNDS
# (0: compare_presets re-measures instead), COMPARE_ROUNDS (3), STUDY_TIMEOUT_S (240: the study is
# stopped there and the trials done so far are used), SEED (1), ROOFLINE_TORCH (1: also time a
# device copy with torch when it is importable), EXTRA_CMAKE_ARGS, PACK_TO.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PYTHONUNBUFFERED=1

cmd=${1:-}
case "$cmd" in
  setup | run | configure | check-bundle) REHEARSAL=${REHEARSAL:-0} ;;
  rehearse | rehearse-setup | rehearse-run) REHEARSAL=1 ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
esac

PYTHON=${PYTHON:-python3}
BUNDLE=${BUNDLE:-gpu-bundle}
if [[ $REHEARSAL == 1 ]]; then
  WORK=${WORK:-gpu-work/rehearsal}
  GPU_OUT=${GPU_OUT:-gpu-out-rehearsal}
  SHAPE=${SHAPE:-tiny}
  TRIALS=${TRIALS:-4}
  SPACE=${SPACE-cpu}
  PROMPT_TOKENS=${PROMPT_TOKENS-32}
  GEN_TOKENS=${GEN_TOKENS-16}
  REPEATS=${REPEATS-3}
else
  WORK=${WORK:-gpu-work}
  GPU_OUT=${GPU_OUT:-gpu-out}
  SHAPE=${SHAPE:-8b}
  TRIALS=${TRIALS:-12}
  SPACE=${SPACE-}
  PROMPT_TOKENS=${PROMPT_TOKENS-}
  GEN_TOKENS=${GEN_TOKENS-}
  REPEATS=${REPEATS-}
fi
QTYPE=${QTYPE:-Q4_K_M}
CONFIRM_ROUNDS=${CONFIRM_ROUNDS:-0}
COMPARE_ROUNDS=${COMPARE_ROUNDS:-3}
STUDY_TIMEOUT_S=${STUDY_TIMEOUT_S:-240}
SEED=${SEED:-1}
ROOFLINE_TORCH=${ROOFLINE_TORCH:-1}
VENV=$WORK/venv
LLAMA_SRC=${LLAMA_SRC:-$BUNDLE/llama-cpp-python}
STUDY=gpu-check

# What llama-cpp-python is built with, here and there: nothing beyond what the tool uses (no
# multimodal library, no NCCL for one GPU, no HTTPS download support, no tests/tools/examples).
LLAMA_CMAKE_FLAGS="-DLLAVA_BUILD=OFF -DGGML_CUDA_NCCL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF"

started=$SECONDS
step() { echo; echo "== [+$((SECONDS - started))s] $*"; }
die() { echo "gpu_check: $*" >&2; exit 1; }

# ------------------------------------------------------------------------------------------------
# (a) setup

cuda_arch() {  # compute capability of GPU 0 as CMake wants it: 9.0 -> 90
  local cap
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
  [[ $cap =~ ^[0-9]+$ ]] || die "nvidia-smi gave no compute capability ('$cap')"
  echo "$cap"
}

cmake_flags() {  # the flags of the build; with CUDA only when an architecture is given
  local flags="$LLAMA_CMAKE_FLAGS"
  [[ -n ${1:-} ]] && flags="-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=$1 $flags"
  echo "$flags ${EXTRA_CMAKE_ARGS:-}"
}

make_venv() {
  if [[ ! -x $VENV/bin/python ]]; then
    mkdir -p "$(dirname "$VENV")"
    # No ensurepip (Debian's python without python3-venv): pip then comes from the base, below.
    "$PYTHON" -m venv --system-site-packages "$VENV" 2>/dev/null ||
      { rm -rf "$VENV"; "$PYTHON" -m venv --system-site-packages --without-pip "$VENV"; }
  fi
  # When PYTHON is itself a venv (the GPU machine's python3 is /opt/torch/.venv's), a venv made
  # from it sees its *base* interpreter's packages, not its own: add them with a .pth, after
  # this venv's own site-packages so what is installed here wins.
  local own
  own=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  "$PYTHON" -c 'import sys; print("\n".join(p for p in sys.path if p.endswith(("site-packages", "dist-packages"))))' \
    > "$own/_gpu_check_base.pth"
  "$VENV/bin/python" -m pip --version >/dev/null || die "no pip in $VENV nor in $PYTHON's packages"
  VPY=$VENV/bin/python
  echo "venv $VENV: $("$VPY" -V) with $PYTHON's packages ($(wc -l < "$own/_gpu_check_base.pth") site dirs)"
}

install_tool() {  # editable: `python -m tuner.cli` from the repository then finds tuner.search_spaces
  bundle_wheels
  "$VPY" -m pip install -q --no-index --find-links "$BUNDLE/wheels" --upgrade setuptools ||
    die "installing the bundle's setuptools (the tool's build backend) failed"
  "$VPY" -m pip install -q --no-index --no-deps --no-build-isolation -e . ||
    die "installing the tool (--no-deps) failed"
}

bundle_wheels() { ls "$BUNDLE"/wheels/*.whl >/dev/null 2>&1 || die "no wheels in $BUNDLE/wheels: run scripts/gpu_bundle.sh here first and carry $BUNDLE"; }

check_bundle() {  # proof, without installing, that the wheels install offline on CPython 3.12
  bundle_wheels
  local py=${VPY:-$PYTHON} tmp
  tmp=$(mktemp -d)
  "$py" scripts/gpu_summary.py check-bundle "$BUNDLE/wheels" "$LLAMA_SRC"
  # pip's own word, resolving for the GPU machine's interpreter and platform, offline.
  local names
  names=$(for w in "$BUNDLE"/wheels/*.whl; do basename "$w" | cut -d- -f1; done)
  # shellcheck disable=SC2086
  "$py" -m pip install --dry-run --quiet --no-index --find-links "$BUNDLE/wheels" --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --target "$tmp/site" \
    --report "$tmp/report.json" $names || die "pip cannot install the bundle's wheels for CPython 3.12 offline"
  "$py" -c 'import json, sys; r = json.load(open(sys.argv[1])); print("pip --dry-run (cp312, manylinux x86_64, offline) would install:", " ".join(i["metadata"]["name"] + "==" + i["metadata"]["version"] for i in r["install"]))' "$tmp/report.json"
  rm -rf "$tmp"
}

configure() {  # CMake-configure the bundle's trimmed tree with the build's flags
  [[ -f $BUNDLE/llama-cpp-python/CMakeLists.txt ]] || die "no $BUNDLE/llama-cpp-python: run scripts/gpu_bundle.sh"
  local arch="" dir=$WORK/build/configure-check
  if [[ $REHEARSAL != 1 ]] && command -v nvidia-smi >/dev/null; then arch=$(cuda_arch); fi
  local flags
  flags=$(cmake_flags "$arch")
  rm -rf "$dir"; mkdir -p "$dir"
  echo "cmake configure of $BUNDLE/llama-cpp-python: $flags"
  # shellcheck disable=SC2086
  eval cmake -S "$BUNDLE/llama-cpp-python" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release $flags > "$dir.log" 2>&1 ||
    { tail -30 "$dir.log"; die "cmake configure failed (log: $dir.log)"; }
  grep -E "CUDA Toolkit found|Using CMAKE_CUDA_ARCHITECTURES|Including (CPU|CUDA) backend|Configuring done|Generating done" "$dir.log" || true
}

build_llama() {  # llama-cpp-python from the bundle's tree into the venv (CUDA when an arch is given)
  local arch=${1:-} flags log=$GPU_OUT/build-llama.log
  flags=$(cmake_flags "$arch")
  mkdir -p "$GPU_OUT" "$WORK/build"
  echo "building llama-cpp-python ($flags) with $(nproc) jobs; log $log"
  local t0=$SECONDS
  CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) FORCE_CMAKE=1 \
    "$VPY" -m pip install -v --no-index --no-deps --no-build-isolation --force-reinstall --no-cache-dir \
      --config-settings=build-dir="$ROOT/$WORK/build/llama-cpp-python" "$BUNDLE/llama-cpp-python" > "$log" 2>&1 ||
    { tail -40 "$log"; die "building llama-cpp-python failed (log: $log); a rerun of this step continues the build"; }
  echo "built in $((SECONDS - t0)) s"
  echo "$((SECONDS - t0))" > "$GPU_OUT/build-llama.seconds"
}

setup() {
  mkdir -p "$GPU_OUT"
  trap pack EXIT
  step "GPU and CUDA"
  command -v nvidia-smi >/dev/null || die "no nvidia-smi: this is not a GPU machine (rehearse instead)"
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv
  command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH
  nvcc --version | tail -2
  local arch
  arch=$(cuda_arch)
  echo "CUDA architecture: $arch; $(nproc) cores"
  step "venv"
  make_venv
  step "wheels (offline)"
  bundle_wheels
  local names
  names=$(for w in "$BUNDLE"/wheels/*.whl; do basename "$w" | cut -d- -f1; done)
  # shellcheck disable=SC2086
  "$VPY" -m pip install -q --no-index --find-links "$BUNDLE/wheels" --no-cache-dir $names || die "installing the bundle's wheels failed"
  step "llama-cpp-python with CUDA (sm_$arch)"
  if "$VPY" -c 'import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)' 2>/dev/null &&
     [[ -f $WORK/build/llama.stamp && $(cat "$WORK/build/llama.stamp") == "$(cmake_flags "$arch")" ]]; then
    echo "already built with these flags: $(cat "$WORK/build/llama.stamp")"
  else
    build_llama "$arch"
    cmake_flags "$arch" > "$WORK/build/llama.stamp"
  fi
  step "the tool (--no-deps)"
  install_tool
  "$VPY" -c 'import llama_cpp, optuna, sqlalchemy, tuner; assert llama_cpp.llama_supports_gpu_offload(), "no GPU offload"; print("llama-cpp-python", llama_cpp.__version__, "GPU offload: yes; optuna", optuna.__version__)'
  step "setup done in $((SECONDS - started)) s; next: scripts/gpu_check.sh run"
}

rehearse_setup() {
  step "venv (rehearsal: $PYTHON, no CUDA)"
  make_venv
  step "bundle installs offline on CPython 3.12 (dry run)"
  check_bundle
  step "CMake configure of the trimmed tree, the build's flags minus CUDA"
  configure
  if [[ ${FULL_BUILD:-0} == 1 ]]; then
    step "full build of the trimmed tree (FULL_BUILD=1, CPU)"
    # The GPU machine has scikit-build-core; a rehearsal machine may not (and has a network).
    "$VPY" -c 'import scikit_build_core' 2>/dev/null || "$VPY" -m pip install -q 'scikit-build-core[pyproject]>=0.9.2' ||
      die "scikit-build-core (the sdist's build backend) is missing and could not be installed"
    build_llama ""
  fi
  step "the tool (--no-deps)"
  install_tool
  "$VPY" -c 'import llama_cpp, optuna, tuner; print("llama-cpp-python", llama_cpp.__version__, "from", llama_cpp.__file__)'
  step "rehearsal setup done in $((SECONDS - started)) s"
}

# ------------------------------------------------------------------------------------------------
# (b) run

workload_flags() {
  local f=()
  [[ -n $PROMPT_TOKENS ]] && f+=(--prompt-tokens "$PROMPT_TOKENS")
  [[ -n $GEN_TOKENS ]] && f+=(--gen-tokens "$GEN_TOKENS")
  echo "${f[@]}"
}

timed() {  # timed NAME CMD...: run, record seconds and exit code in steps.tsv
  local name=$1 t0=$SECONDS rc=0
  shift
  "$@" || rc=$?
  printf '%s\t%s\t%s\n' "$name" "$((SECONDS - t0))" "$rc" >> "$GPU_OUT/steps.tsv"
  return $rc
}

summarize() {  # summary.json + summary.md from whatever the steps have written so far
  "$PY" scripts/gpu_summary.py summary "$GPU_OUT" "$REHEARSAL" "$STUDY" "${1:-running}"
}

trial_figures() {  # the study's trials from its storage, through optuna itself
  "$PY" scripts/gpu_summary.py trials "sqlite:///$(realpath "$GPU_OUT")/study.db" "$STUDY" > "$GPU_OUT/trials.json"
}

roofline() {  # decode tok/s x bytes read per token / memory bandwidth
  "$PY" scripts/gpu_summary.py roofline "$GPU_OUT" "$ROOFLINE_TORCH"
}

run_check() {
  if [[ -x $VENV/bin/python ]]; then PY=$VENV/bin/python; elif [[ $REHEARSAL == 1 ]]; then PY=$PYTHON; else
    die "no $VENV: run scripts/gpu_check.sh setup first (on the same machine, just before)"; fi
  mkdir -p "$GPU_OUT" "$WORK/models"
  rm -f "$GPU_OUT"/{steps.tsv,summary.json,summary.md,model.json,doctor.json,trials.json,compare.txt,bench_tuned.json,roofline.json,tuned.yaml,study.db}
  trap 'rc=$?; summarize "$([[ $rc == 0 ]] && echo complete || echo "failed (exit $rc) after step $(tail -1 "$GPU_OUT/steps.tsv" 2>/dev/null | cut -f1)")"; pack; exit $rc' EXIT
  local wl storage="sqlite:///$(realpath "$GPU_OUT")/study.db" model=${MODEL:-$WORK/models/made-$SHAPE-${QTYPE,,}.gguf}
  wl=$(workload_flags)
  echo "python $PY; output $GPU_OUT; model $model; $TRIALS trials; space ${SPACE:-chosen by the tool}; workload ${wl:-the default}"

  step "model: $SHAPE-shaped $QTYPE (scripts/make_model.py)"
  if [[ -f $model && -f $model.json ]]; then
    echo "reusing $model (made earlier: $(cut -c1-120 "$model.json"))"
    cp "$model.json" "$GPU_OUT/model.json"
  else
    [[ -n ${MODEL:-} ]] && die "MODEL=$MODEL needs $MODEL.json (make_model.py's last line) beside it"
    timed make_model "$PY" scripts/make_model.py --shape "$SHAPE" --type "$QTYPE" --out "$model" --llama-src "$LLAMA_SRC" \
      > "$GPU_OUT/make_model.txt" 2> "$GPU_OUT/make_model.log" || { tail -20 "$GPU_OUT/make_model.log"; die "make_model failed"; }
    head -n -1 "$GPU_OUT/make_model.txt"
    tail -1 "$GPU_OUT/make_model.txt" | tee "$model.json" > "$GPU_OUT/model.json"
  fi

  step "tune doctor"
  timed doctor "$PY" -m tuner.cli doctor --model "$model" --json > "$GPU_OUT/doctor.json"
  "$PY" scripts/gpu_summary.py doctor "$GPU_OUT/doctor.json" "$REHEARSAL" "$SPACE"

  step "study: $TRIALS trials, speed only, space ${SPACE:-auto} (stopped after ${STUDY_TIMEOUT_S}s if still running)"
  # shellcheck disable=SC2086
  timed study timeout -s INT -k 60 "$STUDY_TIMEOUT_S" "$PY" -m tuner.cli start --model "$model" --no-quality --trials "$TRIALS" \
    --study "$STUDY" --storage "$storage" --seed "$SEED" --confirm-rounds "$CONFIRM_ROUNDS" ${SPACE:+--space "$SPACE"} \
    ${REPEATS:+--repeats "$REPEATS"} $wl 2>&1 | tee "$GPU_OUT/study.txt" || true
  trial_figures
  "$PY" scripts/gpu_summary.py trials-ok "$GPU_OUT/trials.json" || die "the study completed no trial"

  step "export the tuned preset"
  timed export "$PY" -m tuner.cli export "$STUDY" --storage "$storage" --out "$GPU_OUT/tuned.yaml"

  step "compare_presets: defaults, guide card, tuned ($COMPARE_ROUNDS interleaved rounds)"
  # shellcheck disable=SC2086
  timed compare "$PY" benchmarks/compare_presets.py --preset "$GPU_OUT/tuned.yaml" --rounds "$COMPARE_ROUNDS" $wl 2>&1 |
    tee "$GPU_OUT/compare.txt"

  step "telemetry: tune bench --json of the tuned preset"
  # shellcheck disable=SC2086
  timed bench "$PY" -m tuner.cli bench --preset "$GPU_OUT/tuned.yaml" --no-quality --json ${REPEATS:+--repeats "$REPEATS"} $wl \
    > "$GPU_OUT/bench_tuned.json"
  "$PY" scripts/gpu_summary.py bench-line "$GPU_OUT/bench_tuned.json"

  step "roofline"
  timed roofline roofline > "$GPU_OUT/roofline.json"
  cat "$GPU_OUT/roofline.json"

  step "summary ($GPU_OUT/summary.md, summary.json)"
  summarize complete
  cat "$GPU_OUT/summary.md"
  step "run done in $((SECONDS - started)) s"
}

pack() {  # results back through the device tool: at most 8 files, so one archive + the summaries
  [[ -n ${PACK_TO:-} ]] || return 0
  mkdir -p "$PACK_TO"
  tar czf "$PACK_TO/gpu-out.tar.gz" -C "$(dirname "$GPU_OUT")" "$(basename "$GPU_OUT")" 2>/dev/null || true
  cp -f "$GPU_OUT"/summary.json "$GPU_OUT"/summary.md "$PACK_TO"/ 2>/dev/null || true
}

case "$cmd" in
  setup) setup ;;
  run) run_check ;;
  configure) configure ;;
  check-bundle) check_bundle ;;
  rehearse-setup) rehearse_setup ;;
  rehearse-run) run_check ;;
  rehearse) rehearse_setup; started=$SECONDS; run_check ;;
esac
