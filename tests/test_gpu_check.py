"""The GPU check's parts, rehearsed on this CPU: the model maker, the bundle, the whole check.

scripts/make_model.py writes the requested llama shape (read back with the tool's own GGUF reader)
and the file loads in llama_cpp.Llama and generates; scripts/gpu_bundle.sh fits the 64 MiB the GPU
machine takes; `scripts/gpu_check.sh rehearse` runs both GPU commands' steps, in order, from a clean
checkout, and writes a summary with every figure the GPU run will report.

llama.cpp's source tree (gguf-py and the vocabulary GGUF) comes from the llama-cpp-python sdist of
the installed version: $LLAMA_SDIST if set, else `pip download` (pip's cache makes it fast). No GPU,
no mocks: the real quantizer, engine, CLI, study and benchmarks.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tuner.gguf import read_gguf_info

ROOT = Path(__file__).resolve().parents[1]
MAKE_MODEL = ROOT / "scripts" / "make_model.py"
LIMIT_MIB = 64
REHEARSAL_BUDGET_S = 180  # the issue: about 3 minutes on this 2-core machine (it takes under 1 here)


def _load_make_model():
    spec = importlib.util.spec_from_file_location("make_model", MAKE_MODEL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_model"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def llama_sdist(tmp_path_factory) -> Path:
    """The llama-cpp-python sdist of the installed version."""
    given = os.environ.get("LLAMA_SDIST")
    if given:
        if not Path(given).is_file():
            pytest.fail(f"LLAMA_SDIST={given} is not a file")
        return Path(given)
    version = importlib.metadata.version("llama_cpp_python")
    folder = tmp_path_factory.mktemp("sdist")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", "-d", str(folder), f"llama-cpp-python=={version}"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    found = sorted(folder.glob("llama_cpp_python-*.tar.gz"))
    if result.returncode != 0 or not found:
        pytest.fail(
            f"could not get the llama-cpp-python {version} sdist (llama.cpp's source tree) with pip download:\n{result.stderr[-2000:]}\n"
            "give one with LLAMA_SDIST=/path/llama_cpp_python-VERSION.tar.gz"
        )
    return found[0]


@pytest.fixture(scope="session")
def llama_src(tmp_path_factory, llama_sdist: Path) -> Path:
    """What make_model.py reads of the sdist: gguf-py and the Llama 3 vocabulary GGUF."""
    folder = tmp_path_factory.mktemp("llama-src")
    wanted = re.compile(r"^[^/]+/vendor/llama\.cpp/(gguf-py/gguf/|models/ggml-vocab-llama-bpe\.gguf$)")
    with tarfile.open(llama_sdist) as archive:
        members = [m for m in archive if wanted.match(m.name)]
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python 3.11.4+
        archive.extractall(folder, members=members, **safe)
    (root,) = folder.iterdir()
    return root


# ---------------------------------------------------------------------------------------------
# The model maker


def test_named_shapes_are_the_llama_models_sizes():
    """Each named shape has exactly its model's parameter count (Llama 3 vocabulary of 128256)."""
    shapes = _load_make_model().SHAPES
    assert shapes["1b"].params(128256) == 1_235_814_400  # Llama-3.2-1B (tied embeddings)
    assert shapes["3b"].params(128256) == 3_212_749_824  # Llama-3.2-3B (tied embeddings)
    assert shapes["8b"].params(128256) == 8_030_261_248  # Llama-3.1-8B
    assert (shapes["8b"].layers, shapes["8b"].hidden, shapes["8b"].kv_heads, shapes["8b"].ffn) == (32, 4096, 8, 14336)


@pytest.fixture(scope="module")
def made(tmp_path_factory, llama_src: Path) -> SimpleNamespace:
    """A model of explicit numbers (no named shape), untied, quantized to Q4_K_M."""
    out = tmp_path_factory.mktemp("made") / "m.gguf"
    args = ["--layers", "3", "--hidden", "256", "--heads", "4", "--kv-heads", "2", "--ffn", "768", "--context", "4096", "--no-tied"]
    result = subprocess.run(
        [sys.executable, str(MAKE_MODEL), *args, "--type", "Q4_K_M", "--out", str(out), "--llama-src", str(llama_src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return SimpleNamespace(path=out, stdout=result.stdout, report=json.loads(result.stdout.strip().splitlines()[-1]))


def test_make_model_writes_the_requested_shape(made):
    info = read_gguf_info(made.path)
    assert info.architecture == "llama"
    assert (info.n_layers, info.embedding_length, info.n_head, info.n_head_kv) == (3, 256, 4, 2)
    assert (info.key_length, info.context_length) == (64, 4096)
    assert info.metadata["llama.feed_forward_length"] == 768
    assert info.metadata["tokenizer.ggml.pre"] == "llama-bpe"  # the vocabulary came along
    assert info.metadata["general.file_type"] == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M, set by llama.cpp's quantizer
    assert not made.path.with_name(made.path.name + ".f16.tmp").exists()  # the f16 intermediate is gone
    report = made.report
    assert report["shape"] == "custom" and report["tied"] is False and report["vocab"] == 128256
    assert report["bytes"] == made.path.stat().st_size < report["f16_bytes"]
    # untied: decoding reads the output matrix whole but only a row of the token embedding
    assert 0 < report["decode_read_bytes"] < report["weight_bytes"] < report["bytes"]
    assert report["tensor_types"]["Q4_K"] > 0 and "F16" not in report["tensor_types"]


def test_made_model_loads_and_generates(made):
    import llama_cpp

    llm = llama_cpp.Llama(str(made.path), n_ctx=128, n_threads=2, verbose=False)
    try:
        assert llm.n_vocab() == 128256
        tokens = llm.tokenize(b"The capital of France is")
        generated = []
        for token in llm.generate(tokens, temp=0.0):  # no stop at end-of-text: the output is noise anyway
            generated.append(token)
            if len(generated) == 8:
                break
        assert len(generated) == 8 and all(0 <= t < 128256 for t in generated)
        assert isinstance(llm.detokenize(generated), bytes)
    finally:
        llm.close()


def test_make_model_says_what_is_missing(tmp_path):
    result = subprocess.run(
        [sys.executable, str(MAKE_MODEL), "--layers", "2", "--out", str(tmp_path / "x.gguf"), "--llama-src", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "--hidden --heads --kv-heads --ffn" in result.stderr
    result = subprocess.run(
        [sys.executable, str(MAKE_MODEL), "--shape", "tiny", "--out", str(tmp_path / "x.gguf"), "--llama-src", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "holds neither vendor/llama.cpp nor a llama.cpp tree" in result.stderr
    assert not (tmp_path / "x.gguf").exists()


# ---------------------------------------------------------------------------------------------
# The bundle and the rehearsal, from a clean checkout


def _clean_checkout(dest: Path) -> Path:
    """The files that travel to the GPU machine: tracked and untracked-but-not-ignored ones."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    return dest


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, llama_sdist: Path) -> SimpleNamespace:
    """scripts/gpu_bundle.sh, then `scripts/gpu_check.sh rehearse`, in a clean checkout."""
    repo = _clean_checkout(tmp_path_factory.mktemp("checkout"))
    env = {**os.environ, "PYTHON": sys.executable, "LLAMA_SDIST": str(llama_sdist), "PYTHONUNBUFFERED": "1"}
    env.pop("LLAMA_SRC", None)
    t0 = time.monotonic()
    bundle = subprocess.run(["bash", "scripts/gpu_bundle.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert bundle.returncode == 0, bundle.stdout[-3000:] + bundle.stderr[-3000:]
    t1 = time.monotonic()
    check = subprocess.run(["bash", "scripts/gpu_check.sh", "rehearse"], cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    t2 = time.monotonic()
    assert check.returncode == 0, check.stdout[-6000:] + check.stderr[-3000:]
    out = repo / "gpu-out-rehearsal"
    return SimpleNamespace(
        repo=repo, bundle=bundle, check=check, out=out, bundle_s=t1 - t0, check_s=t2 - t1,
        summary=json.loads((out / "summary.json").read_text()),
    )


def test_bundle_fits_the_gpu_machine(rehearsal):
    text = rehearsal.bundle.stdout
    together = float(re.search(r"together: ([\d.]+) MiB", text).group(1))
    assert together < LIMIT_MIB, text[-1500:]
    wheels = {p.name.split("-")[0].lower() for p in (rehearsal.repo / "gpu-bundle" / "wheels").glob("*.whl")}
    assert {"optuna", "sqlalchemy", "alembic", "colorlog", "mako", "diskcache"} <= wheels
    assert "dependency closure ok" in text and "pip --dry-run (cp312" in text
    tree = rehearsal.repo / "gpu-bundle" / "llama-cpp-python" / "vendor" / "llama.cpp"
    assert (tree / "models" / "ggml-vocab-llama-bpe.gguf").is_file() and (tree / "gguf-py" / "gguf" / "gguf_writer.py").is_file()
    assert (tree / "ggml" / "src" / "ggml-cuda").is_dir() and (tree / "ggml" / "src" / "ggml-cpu").is_dir()
    for gone in ("docs", "tests", "tools", "examples", "ggml/src/ggml-vulkan", "models/ggml-vocab-gemma-4.gguf"):
        assert not (tree / gone).exists(), gone
    assert "Configuring done" in text  # the trimmed tree still CMake-configures


def test_rehearsal_runs_the_gpu_steps_end_to_end(rehearsal):
    steps = re.findall(r"^== \[\+\d+s\] (.*)$", rehearsal.check.stdout, re.M)
    # (a) and (b), in the GPU commands' order
    order = ["venv", "bundle installs offline", "CMake configure", "the tool (--no-deps)", "rehearsal setup done", "model: tiny-shaped",
             "tune doctor", "study:", "export the tuned preset", "compare_presets", "telemetry", "roofline", "summary", "run done"]
    assert len(steps) == len(order) and all(step.startswith(want) for step, want in zip(steps, order)), steps
    assert rehearsal.check_s < REHEARSAL_BUDGET_S, f"rehearsal took {rehearsal.check_s:.0f} s"
    print(f"\nbundle {rehearsal.bundle_s:.0f} s, rehearsal {rehearsal.check_s:.0f} s")


def test_rehearsal_summary_has_every_figure(rehearsal):
    s = rehearsal.summary
    assert s["status"] == "complete" and s["mode"].startswith("rehearsal")
    assert all(step["rc"] == 0 for step in s["steps"]), s["steps"]
    assert {"date", "device", "llama_cpp", "model", "study", "compare", "tuned_bench", "telemetry", "roofline"} <= s.keys()
    assert s["model"]["shape"] == "tiny" and s["model"]["layers"] == 2 and s["model"]["type"] == "Q4_K_M"
    assert s["study"]["complete"] + s["study"]["raced"] == s["study"]["trials"] == 4 and s["study"]["space"] == "cpu"
    assert s["study"]["median_trial_s"] > 0
    compare = s["compare"]
    for config in ("defaults", "guide_card", "tuned"):
        medians = compare["medians"][config]
        assert medians["requests_per_min"] > 0 and medians["decode_tok_s"] > 0 and medians["prompt_tok_s"] > 0
    assert compare["tuned_vs_defaults"] > 0 and compare["tuned_vs_guide"] > 0
    roof = s["roofline"]
    assert roof["bytes_per_token_mib"] > 0 and roof["bandwidth_gb_s"] > 0 and 0 < roof["fraction"]
    assert s["telemetry"]["peak_rss_mib"] > 0
    per_trial = s["study"]["per_trial"]  # where each trial ran (the CPU here: nothing offloaded, no line of layers)
    assert [t["trial"] for t in per_trial] == list(range(4)) and per_trial[0]["label"] == "defaults"
    assert all(t["offloaded"] is None and t["n_gpu_layers"] == (-1 if t["label"] == "guide_card" else 0) for t in per_trial if t["state"] == "COMPLETE")
    assert all(t["kv_mib"] for t in per_trial if t["state"] in ("COMPLETE", "PRUNED"))
    assert s["study"]["placement"] == {} and s["study"]["noise_floor"]["label"] == "defaults"
    md = (rehearsal.out / "summary.md").read_text()
    assert "| tuned preset |" in md and "roofline:" in md and "random weights" in md
    assert "| trial | config | n_gpu_layers | offloaded (read back) |" in md and "- placement: the defaults ran with no layer offloaded" in md
    assert (rehearsal.out / "tuned.yaml").is_file() and (rehearsal.out / "study.db").is_file()
