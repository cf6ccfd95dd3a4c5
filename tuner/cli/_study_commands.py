"""The commands that run measurements on a study: start, resume, confirm, explain."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import typer

from tuner.cli._app import (
    ConfirmOpt,
    DepthOpt,
    EngineOpt,
    ServerBinOpt,
    JsonOpt,
    WorkloadOpt,
    GenOpt,
    ModelOpt,
    NoQualityOpt,
    PromptOpt,
    RepeatsOpt,
    StorageOpt,
    TimeoutOpt,
    app,
    check_timeout,
    interruptible,
    study_model,
    study_worker,
    targets,
    with_concurrency,
    worker,
    workload,
)
from tuner.cli._print import (
    print_engine,
    print_guide_audit,
    print_importances,
    print_knob_effects,
    print_lacks,
    print_progress,
    print_requirement,
    print_summary,
    print_workload,
    say,
)
from tuner.errors import StudyError


@app.command()
def start(
    model: Optional[Path] = ModelOpt,
    trials: int = typer.Option(50, "--trials", "-n", help="Trials in the study, the two baselines included."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name (default: from the model file name)."),
    storage: Optional[str] = StorageOpt,
    space: Optional[str] = typer.Option(None, "--space", help="Search space: cpu, rtx4090 or a YAML file (default: from the hardware)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampler seed, for a reproducible sequence of trials."),
    workload_name: Optional[str] = WorkloadOpt,
    prompt_tokens: Optional[int] = PromptOpt,
    gen_tokens: Optional[int] = GenOpt,
    depth: Optional[int] = DepthOpt,
    repeats: int = RepeatsOpt,
    trial_timeout: float = TimeoutOpt,
    quality_budget: float = typer.Option(0.03, "--quality-budget", help="Largest mean KL divergence from the reference a feasible trial may have."),
    accuracy_floor: float = typer.Option(0.75, "--accuracy-floor", help="Expected task accuracy a feasible trial needs, as a fraction of greedy decoding's."),
    max_ttft_ms: Optional[float] = typer.Option(None, "--max-ttft-ms", help="Latency target: time to first token on the slowest request shape."),
    min_decode_tok_s: Optional[float] = typer.Option(None, "--min-decode-tok-s", help="Latency target: decode speed on the slowest request shape."),
    no_quality: bool = NoQualityOpt,
    confirm_rounds: int = ConfirmOpt,
    n_ctx: Optional[int] = typer.Option(
        None, "--n-ctx", help="The context size your application needs; the preset never carries less (default: your --baseline's, else 4096 capped at the model's training context)."
    ),
    baseline: Optional[Path] = typer.Option(
        None, "--baseline", help="Your current settings (a preset, or a YAML/JSON mapping of llama_cpp.Llama and sampling keywords): measured as 'yours', the starting point of the preset."
    ),
    no_racing: bool = typer.Option(False, "--no-racing", help="Measure every trial fully (no early stop of clearly slower trials); for audits."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Compute the quality proxy's logits for every trial (no cache); for audits."),
    engine: str = EngineOpt,
    server_bin: Optional[str] = ServerBinOpt,
    concurrency: int = typer.Option(
        1, "--concurrency", help="Requests at once: each request shape sent by this many users together; the objective is then the requests completed per minute, and llama-server's slots (-np) are searched: 1 to it, shared or not (--kv-unified), and auto (--engine llama-server)."
    ),
) -> None:
    """Start a new study: noise floor, baselines, the search, then confirmation of the winner."""
    from tuner import hardware, models, placement, space as spaces, study as studies
    from tuner.baseline import load_baseline, required_n_ctx
    from tuner.gguf import read_gguf_info
    from tuner.quality import QualityBudget
    from tuner.stats import check_rounds

    # Every input is checked before anything is printed, created or started.
    studies.check_trials(trials)
    budget = QualityBudget(kld_mean=quality_budget, accuracy_floor=accuracy_floor)
    limits = targets(max_ttft_ms, min_decode_tok_s)
    check_rounds(confirm_rounds, name="confirm_rounds", flag="--confirm-rounds", skip_allowed=True)
    check_timeout(trial_timeout)
    model_path = models.resolve_model(model)
    the_workload = workload(workload_name, prompt_tokens, gen_tokens, depth, repeats=repeats, no_quality=no_quality, model_path=model_path)
    the_workload = with_concurrency(the_workload, concurrency, engine)
    yours = load_baseline(baseline) if baseline is not None else None
    model_info = read_gguf_info(model_path)
    requirement = required_n_ctx(n_ctx, yours.n_ctx if yours else None, train_ctx=model_info.context_length, needed=the_workload.tokens_needed)
    machine = hardware.describe_machine()
    if space:
        search_space, why = spaces.load_space(space), "chosen with --space"
        placement.check_offload(search_space, machine)
    else:
        search_space, why = placement.choose_space(machine, model_info, the_workload)
    searched = search_space.for_requirement(requirement.n_ctx, model_info.context_length)
    name = study or model_path.stem
    spec = studies.StudySpec(
        model=model_path,
        model_sha256=models.model_sha256(model_path),
        space=search_space,
        workload=the_workload,
        trials=trials,
        seed=seed,
        budget=budget,
        targets=limits,
        economies=studies.Economies(racing=not no_racing, cache=not no_cache),
        requirement=requirement,
        yours=yours,
    )
    studies.check_new_study(name, storage)
    with worker(model_path, trial_timeout, engine, server_bin) as runner:
        runner.start()  # a model llama.cpp cannot load fails here, before any storage is created
        if engine == "llama-server":  # its own defaults are the baseline, read from the binary
            defaults = runner.defaults(requirement.n_ctx)  # first: the record names what it has no flag for
            spec = replace(spec, engine=runner.record(), defaults=defaults)
        storage_obj = studies.open_storage(storage)
        say(f"study '{name}' in {studies.redact(storage_obj.url)}: {trials} trials on {model_path.name}")
        say(f"machine: {machine.summary()} [fingerprint {machine.fingerprint}]")
        if spec.engine:
            print_engine(spec.engine, spec.defaults)
        say(f"space: {search_space.name} ({search_space.source}): {why}")
        print_lacks(spec.engine or {})
        print_workload(the_workload, (spec.engine or {}).get("lacks"))
        print_requirement(requirement, searched, yours, engine)
        if the_workload.quality:
            say("objectives: requests/min on the workload (median, maximize) and mean KLD vs the reference (minimize)")
            say(f"  feasible when KLD <= {budget.kld_mean} and task accuracy >= {budget.accuracy_floor:.0%} of greedy")
        else:
            say("objective: requests/min on the workload (median); no quality proxy (--no-quality)")
        if limits:
            say(f"latency targets: {limits.describe()} (a trial that misses one is infeasible)")
        say(
            f"economies: racing {'off' if no_racing else 'on'} (a trial whose first two repetitions are clearly slower than the best stops), "
            f"quality cache {'off' if no_cache else 'on'}"
        )
        result = interruptible(
            lambda: studies.start_study(
                spec,
                name=name,
                storage=storage_obj,
                runner=runner,
                machine=machine.to_dict(),
                on_progress=print_progress,
                on_note=say,
                confirm_rounds=confirm_rounds,
            ),
            name,
            storage,
        )
    print_summary(result, storage)


@app.command()
def resume(
    name: str = typer.Argument(..., help="Study name (see `tune list`)."),
    trials: Optional[int] = typer.Option(None, "--trials", "-n", help="Target trial count (default: the study's own)."),
    storage: Optional[str] = StorageOpt,
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="The study's model file, if it has moved."),
    allow_other_hardware: bool = typer.Option(False, "--allow-other-hardware", help="Resume on a machine with another fingerprint."),
    trial_timeout: float = TimeoutOpt,
    confirm_rounds: int = ConfirmOpt,
    server_bin: Optional[str] = ServerBinOpt,
) -> None:
    """Continue a stopped or crashed study until it holds its target number of trials, then confirm its winner."""
    from tuner import hardware, space as spaces, study as studies
    from tuner.stats import check_rounds

    if trials is not None:
        studies.check_trials(trials)
    check_rounds(confirm_rounds, name="confirm_rounds", flag="--confirm-rounds", skip_allowed=True)
    check_timeout(trial_timeout)
    storage_obj = studies.open_storage(storage, must_exist=True)
    study_obj = studies.load_study(name, storage_obj)
    studies.check_quality_version(study_obj)
    model_path = study_model(study_obj, model)
    machine = hardware.describe_machine()
    studies.check_machine(study_obj, machine, allow_other_hardware)
    recorded_space = study_obj.user_attrs["space"]
    search_space = spaces.parse_space(recorded_space["text"], source=recorded_space["source"])
    target = trials or int(study_obj.user_attrs["target_trials"])
    done = len(studies.counted_trials(study_obj))
    runner_obj = study_worker(study_obj, model_path, trial_timeout, server_bin)
    say(f"resuming study '{name}': {done}/{target} trials done")
    with runner_obj as runner:
        result = interruptible(
            lambda: studies.resume_study(
                study_obj,
                runner=runner,
                space=search_space,
                trials=trials,
                machine=machine,
                allow_other_hardware=allow_other_hardware,
                on_progress=print_progress,
                on_note=say,
                confirm_rounds=confirm_rounds,
            ),
            name,
            storage,
        )
    print_summary(result, storage)


@app.command("confirm")
def confirm_(
    name: str = typer.Argument(..., help="Study name."),
    storage: Optional[str] = StorageOpt,
    rounds: int = typer.Option(3, "--rounds", help="Interleaved rounds (3 or more)."),
    candidates: int = typer.Option(3, "--candidates", help="How many of the fastest feasible trials to re-measure."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="The study's model file, if it has moved."),
    trial_timeout: float = TimeoutOpt,
    as_json: bool = JsonOpt,
    server_bin: Optional[str] = ServerBinOpt,
) -> None:
    """Re-measure the study's top candidates and the baselines, interleaved, pick the winner,
    ablate it into the minimal preset, and decide speculation on it (requests with text)."""
    from tuner import hardware, study as studies
    from tuner.study import confirm as confirming
    from tuner.study.ablation import ablate
    from tuner.study.speculation import speculate

    confirming.check_request(rounds, candidates)
    check_timeout(trial_timeout)
    storage_obj = studies.open_storage(storage, must_exist=True)
    study_obj = studies.load_study(name, storage_obj)
    studies.check_machine(study_obj, hardware.describe_machine())
    with study_worker(study_obj, study_model(study_obj, model), trial_timeout, server_bin) as runner:
        notes = (lambda _line: None) if as_json else say  # stdout stays one JSON object
        result = confirming.confirm(study_obj, runner, rounds=rounds, candidates=candidates, on_note=notes)
        if result is not None and result.winner is not None:
            if study_obj.user_attrs.get("reference"):  # the minimal preset's quality is computed against it
                runner.reference(study_obj.user_attrs["model_sha256"])
            ablate(study_obj, runner, rounds=rounds, on_note=notes)
        speculate(study_obj, rounds=rounds, on_note=notes)
    if result is None:
        raise StudyError(f"study '{name}' has no feasible trial besides the defaults to confirm", f"run more trials: tune resume {name} --trials N")
    if as_json:
        typer.echo(json.dumps(studies.study_json(study_obj)))
        return
    print_summary(study_obj, storage)


@app.command()
def explain(
    name: str = typer.Argument(..., help="Study name."),
    storage: Optional[str] = StorageOpt,
    audit_guide: bool = typer.Option(
        False, "--audit-guide", help="Measure the RTX 4090 guide's per-knob claims here, interleaved (a few minutes)."
    ),
    rounds: int = typer.Option(3, "--rounds", help="Interleaved rounds for --audit-guide (3 or more)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="The study's model file, if it has moved."),
    trial_timeout: float = TimeoutOpt,
    as_json: bool = JsonOpt,
    server_bin: Optional[str] = ServerBinOpt,
) -> None:
    """Parameter importances per objective, each knob's measured effect, and the guide audit."""
    from tuner import hardware, study as studies
    from tuner.workload import Workload
    from tuner.stats import check_rounds
    from tuner.study import explain as explaining

    if audit_guide:
        check_rounds(rounds)
        check_timeout(trial_timeout)
    study_obj = studies.load_study(name, studies.open_storage(storage, must_exist=True))
    if audit_guide:
        studies.check_machine(study_obj, hardware.describe_machine())
        model_path = study_model(study_obj, model)
    scores, effects = explaining.importances(study_obj), explaining.knob_effects(study_obj)
    if not as_json:
        print_importances(scores, len(explaining.searched_trials(study_obj)))
        print_knob_effects(effects, studies.speed_objective(study_obj))
    if audit_guide:
        the_workload = Workload.from_dict(study_obj.user_attrs["workload"])
        notes = (lambda _line: None) if as_json else say  # stdout stays one JSON object
        notes(f"\nguide audit: {len(explaining.GUIDE_CLAIMS)} claims x 2 configurations x {rounds} interleaved rounds (speed only)")
        with study_worker(study_obj, model_path, trial_timeout, server_bin) as runner:
            results = explaining.audit_guide(
                runner, the_workload, rounds=rounds, noise=studies.noise_floor(study_obj), on_note=notes, base=studies.study_defaults(study_obj)
            )
        study_obj.set_user_attr("guide_audit", {"rounds": rounds, "claims": [r.to_dict() for r in results]})
    stored = study_obj.user_attrs.get("guide_audit")
    if as_json:
        typer.echo(json.dumps({
            "study": name,
            "objective": studies.speed_objective(study_obj),
            "searched_trials": len(explaining.searched_trials(study_obj)),
            "importances": scores,
            "knob_effects": [asdict(e) for e in effects],
            "guide_audit": stored,
        }))
        return
    if stored:
        print_guide_audit(stored)
    elif not audit_guide:
        say(f"\nthe guide's per-knob claims are not audited yet: tune explain {name} --audit-guide")
