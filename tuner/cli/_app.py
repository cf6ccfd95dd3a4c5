"""The Typer app, its shared options, and the one place that turns errors into one line.

Errors a user can act on (:class:`tuner.errors.TunerError`) become one line on stderr,
``error: <what> — <how to fix>``, and exit code 2; the traceback only with ``--debug``.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from tuner.errors import ModelError, StudyError, TunerError

__all__ = [
    "check_timeout",
    "ConfirmOpt",
    "EngineOpt",
    "ServerBinOpt",
    "DepthOpt",
    "JsonOpt",
    "WorkloadOpt",
    "targets",
    "GenOpt",
    "ModelOpt",
    "NoQualityOpt",
    "PromptOpt",
    "RepeatsOpt",
    "StorageOpt",
    "TimeoutOpt",
    "app",
    "interruptible",
    "main",
    "study_model",
    "study_worker",
    "worker",
    "workload",
]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Tune llama.cpp (llama-cpp-python) settings for this machine with an Optuna study.",
)

_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")) -> None:
    _state["debug"] = debug


# ---------------------------------------------------------------------------------------------
# Shared options

ModelOpt = typer.Option(None, "--model", "-m", help="GGUF model file (default: the embedded gemma-3-270m Q4_K_M).")
StorageOpt = typer.Option(None, "--storage", help="SQLAlchemy URL of the study storage (default: sqlite:///studies/tuner.db).")
WorkloadOpt = typer.Option(
    None,
    "--workload",
    "-w",
    help="What to tune for: a profile (chat, rag, summarize, code, long-chat), requests with their text (code-edit, questions), a profile .yaml, or your requests as .jsonl (default: chat).",
)
PromptOpt = typer.Option(None, "--prompt-tokens", help="Instead of --workload: one request shape with this many new prompt tokens.")
GenOpt = typer.Option(None, "--gen-tokens", help="Instead of --workload: one request shape generating this many tokens.")
DepthOpt = typer.Option(None, "--depth", help="Instead of --workload: tokens already in the KV cache when the request arrives.")
RepeatsOpt = typer.Option(3, "--repeats", help="Timed repetitions of every request shape per trial (after a warm-up pass); at least 3.")
NoQualityOpt = typer.Option(False, "--no-quality", help="Skip the quality proxy (speed only; no quality floor).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object (fields: docs/json.md).")
TimeoutOpt = typer.Option(600.0, "--trial-timeout", help="Seconds a trial may take before its worker is killed and the trial fails.")
DEFAULT_ENGINE = "llama-cpp-python"
EngineOpt = typer.Option(
    DEFAULT_ENGINE, "--engine", help="What measures the trials: llama-cpp-python (in a worker process) or llama-server (a server process per configuration)."
)
ServerBinOpt = typer.Option(None, "--server-bin", help="The llama-server binary (default: the study's; else llama-server on PATH, else beside this Python).")
ConfirmOpt = typer.Option(
    3, "--confirm-rounds", help="Interleaved rounds re-measuring the top candidates and the defaults at the end; also the ablation's and speculation's (0: skip)."
)


# ---------------------------------------------------------------------------------------------
# Shared helpers


def workload(
    name: Optional[str],
    prompt_tokens: Optional[int],
    gen_tokens: Optional[int],
    depth: Optional[int],
    *,
    repeats: int,
    no_quality: bool = False,
    model_path: Optional[Path] = None,
) -> Any:
    """The workload the options describe: one custom shape (--prompt-tokens/--gen-tokens/--depth),
    the user's requests (.jsonl, tokenized with the model's vocabulary), or a profile."""
    from tuner.errors import ConfigError
    from tuner.workload import DEFAULT_PROFILE, Workload, builtin_profiles, load_profile

    options = {"repeats": repeats, "quality": not no_quality}
    custom = (prompt_tokens, gen_tokens, depth) != (None, None, None)
    if custom and name is not None:
        raise ConfigError(
            f"--workload {name} and --prompt-tokens/--gen-tokens/--depth both describe the requests",
            "give one of them: a workload, or one custom request shape",
        )
    if custom:
        return Workload.single(prompt_tokens or 128, gen_tokens or 64, depth or 0, **options)
    requests = builtin_profiles(".jsonl").get(name or "")
    if requests is not None or (name is not None and name.endswith(".jsonl")):
        from tuner.vocab import Vocab
        from tuner.user_requests import workload_from_requests

        if model_path is None:
            raise ConfigError("a requests file needs the model to count its tokens", "pass --model")
        with Vocab(model_path) as vocab:
            return workload_from_requests(requests or name, vocab, **options)
    return load_profile(name or DEFAULT_PROFILE, **options)


def with_concurrency(the_workload: Any, concurrency: int, engine: str) -> Any:
    """The workload with ``concurrency`` requests at once, which only llama-server serves."""
    from dataclasses import replace

    from tuner.errors import ConfigError

    if concurrency > 1 and engine != "llama-server":
        raise ConfigError(f"--concurrency {concurrency} needs --engine llama-server: llama_cpp.Llama serves one request at a time", "add --engine llama-server, or leave out --concurrency")
    return replace(the_workload, concurrency=concurrency)


def targets(max_ttft_ms: Optional[float], min_decode_tok_s: Optional[float]) -> Any:
    from tuner.workload import LatencyTargets

    return LatencyTargets(max_ttft_ms=max_ttft_ms, min_decode_tok_s=min_decode_tok_s)


def worker(model_path: Path, timeout_s: float, engine: str = DEFAULT_ENGINE, server_bin: Optional[str] = None) -> Any:
    """What measures the trials: llama-cpp-python in a worker process (a llama.cpp abort or OOM
    fails one trial, not the command), or llama-server, a server process per configuration."""
    from tuner.errors import ConfigError
    from tuner.server_worker import ENGINES

    if engine not in ENGINES:
        raise ConfigError(f"unknown engine '{engine}' (--engine)", f"use one of: {', '.join(ENGINES)}")
    if engine == "llama-server":
        from tuner.server_binary import ServerBinary
        from tuner.server_worker import ServerRunner

        return ServerRunner(model_path, ServerBinary.find(server_bin), timeout_s=timeout_s)
    if server_bin is not None:
        raise ConfigError("--server-bin is for --engine llama-server", "add --engine llama-server, or leave out --server-bin")
    from tuner.worker import Worker

    return Worker(model_path, timeout_s=timeout_s)


def study_worker(study_obj: Any, model_path: Path, timeout_s: float, server_bin: Optional[str] = None) -> Any:
    """The engine a study was measured on, again: the same binary and version for llama-server
    (figures from two builds do not mix), unless ``--server-bin`` names another of that version."""
    from tuner.server_worker import engine_record

    from tuner.errors import ConfigError

    record = engine_record(study_obj)
    if record["name"] != "llama-server":
        if server_bin is not None:
            raise ConfigError(f"study '{study_obj.study_name}' was measured on {record['name']}: --server-bin does not apply", "leave out --server-bin")
        return worker(model_path, timeout_s, record["name"])
    runner = worker(model_path, timeout_s, "llama-server", server_bin or record.get("path"))
    if runner.binary.version != record.get("version"):
        raise StudyError(
            f"study '{study_obj.study_name}' was measured on llama-server {record.get('version')}; {runner.binary.path} is {runner.binary.version}",
            "pass that build with --server-bin, or start a new study for this one",
        )
    runner.engine.lacks = dict(record.get("lacks") or {})  # what that build ran at its own defaults
    return runner


def check_timeout(timeout_s: float) -> None:
    """--trial-timeout checked up front (the worker checks it too, but starts later)."""
    from tuner.worker import check_timeout as check

    check(timeout_s)


def study_model(study_obj: Any, override: Optional[Path]) -> Path:
    """The study's model file, checked against the sha256 the study was started with."""
    from tuner import models

    recorded = study_obj.user_attrs["model_path"]
    try:
        path = models.resolve_model(override or recorded)
    except ModelError as exc:
        raise ModelError(exc.what, f"pass the study's model file with --model (it was {recorded})") from None
    if models.model_sha256(path) != study_obj.user_attrs["model_sha256"]:
        raise StudyError(
            f"{path} is not the model study '{study_obj.study_name}' was started with (sha256 differs)",
            f"pass the original model ({Path(recorded).name}) with --model, or start a new study for this one",
        )
    return path


def interruptible(run: Callable[[], Any], name: str, storage: Optional[str]) -> Any:
    """Run a study; on Ctrl-C say how to continue and exit 130."""
    from tuner.study import redact

    try:
        return run()
    except KeyboardInterrupt:
        resume = f"tune resume {name}" + (f" --storage '{redact(storage)}'" if storage else "")
        typer.echo(f"\ninterrupted — continue with: {resume}", err=True)
        raise typer.Exit(130) from None


def main() -> None:
    """Console entry point: one line per user error, exit code 2, traceback only with --debug."""
    try:
        app()
    except TunerError as exc:
        if _state["debug"]:
            traceback.print_exc()
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - a bug: still one line unless --debug
        if _state["debug"]:
            traceback.print_exc()
        typer.echo(f"error: unexpected {type(exc).__name__}: {exc} — rerun with --debug for the traceback", err=True)
        sys.exit(1)
