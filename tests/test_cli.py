"""The real `tune` CLI in subprocesses: a study end to end, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

from tests.conftest import SMALL_ARGS, run_tune


@pytest.fixture(scope="module")
def workdir(cli_study) -> Path:
    """The working directory of the shared 4-trial study 'guide-user', started from the user's own settings (tests/conftest.py)."""
    return cli_study


def _one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def _storage_snapshot(cwd: Path) -> list[tuple]:
    with sqlite3.connect(cwd / "studies" / "tuner.db") as conn:
        return conn.execute("SELECT trial_id, number, state FROM trials ORDER BY trial_id").fetchall() + conn.execute(
            "SELECT * FROM trial_values ORDER BY trial_id"
        ).fetchall()


def test_start_shows_progress_and_the_comparison_table(workdir):
    out = (workdir / "start.out").read_text()
    assert "[  1/4] trial #0   defaults" in out
    assert "[  4/4]" in out and "ETA" in out and "best" in out
    for label in ("best", "defaults", "guide_card", "vs defaults", "median ± IQR"):
        assert label in out
    assert "export the preset: tune export guide-user" in out
    assert (workdir / "studies" / "tuner.db").is_file()
    progress = [line for line in out.splitlines() if line.startswith(("[", "noise floor:", "racing:", "drift:", "round ", "confirming:"))]
    assert len(progress) > 5
    long = [line for line in out.splitlines() if len(line) > 160]
    assert not long, long  # lines a terminal does not wrap: progress, tables and the summary alike


def test_a_progress_line_fits_160_characters_whatever_its_reason():
    from types import SimpleNamespace

    from tuner.cli._print import progress_line

    worst = dict(done=123, target=500, number=1234, label="guide_card", value=12345.6, iqr=1234.5, best_value=12345.6, best_number=1234,
                 eta_s=36000.0, kld=0.1234, accuracy=0.95, objective="requests_per_min", decode_tok_s=1234.5, prompt_tok_s=12345.0)
    reason = "time to first token 1084 ms on its slowest shape > 800 ms (--max-ttft-ms); mean KLD 0.0412 > 0.01 (--quality-budget)"
    for state, feasible in (("COMPLETE", True), ("COMPLETE", False), ("PRUNED", False), ("FAIL", False)):
        line = progress_line(SimpleNamespace(**worst, state=state, feasible=feasible, reason=reason))
        assert len(line) <= 160 and line.endswith("ETA 600m00s"), line  # the reason is cut, never the ETA
    typical = dict(worst, done=12, target=50, number=12, label="search", value=45.6, iqr=1.2, best_value=48.0, best_number=9, eta_s=300.0,
                   decode_tok_s=45.1, prompt_tok_s=712.0)
    offloaded = progress_line(SimpleNamespace(**typical, state="COMPLETE", feasible=True, reason="", offload="offloaded 12/29 layers, asked -1"))
    assert "(offloaded 12/29 layers, asked -1)  best" in offloaded and len(offloaded) <= 160  # a trial not placed as labelled says so
    short = progress_line(SimpleNamespace(**worst, state="PRUNED", feasible=False, reason="stopped early: 33.3 < 51.4 requests/min after 2 repetitions"))
    assert "PRUNED: stopped early: 33.3 < 51.4 requests/min after 2 repetitions  best" in short  # short reasons are whole


def test_a_table_row_too_wide_for_a_terminal_carries_its_last_cell_on_indented_lines(capsys):
    from tuner.cli._print import say, table

    change = "temperature 0.8 -> 0.1, top_k 40 -> 19, top_p 0.95 -> 0.93, min_p 0.05 -> 0.025, repeat_penalty 1 -> 1.1"
    lines = table(["group", "worth (range)", "from -> to"], [["sampling", "0.992x (0.43-1.08)", change], ["threads", "1.4x", "n_threads 1 -> 2"]], width=80).splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    indent = lines[0].index("from -> to")
    assert lines[2].startswith("sampling") and lines[2][indent:].startswith("temperature 0.8 -> 0.1")
    continued = [line for line in lines[3:] if not line.startswith("threads")]
    assert continued and all(line[:indent].strip() == "" for line in continued)  # under its own column
    assert " ".join(line[indent:] for line in [lines[2], *continued]) == change  # nothing lost or reordered
    say("drift: " + "#4 read 41.0, re-read 40.3; " * 10)
    said = capsys.readouterr().out.splitlines()
    assert len(said) == 2 and all(len(line) <= 160 for line in said) and said[1].startswith("  ") and said[1][2] != " "


def test_the_slots_line_offers_a_shared_cache_only_where_the_binary_has_the_flag(capsys):
    from tuner.cli._print import print_workload
    from tuner.workload import load_profile

    users = load_profile("chat", concurrency=3)
    print_workload(users)
    print_workload(users, {"kv_unified": False})  # a llama-server without --kv-unified
    with_flag, without = [line for line in capsys.readouterr().out.splitlines() if "slots (-np)" in line]
    assert "1-3, each with n_ctx of its own or sharing them (--kv-unified), and auto" in with_flag
    assert "1-3, each with n_ctx of its own, and auto" in without


def test_start_measures_the_noise_floor_first_and_confirms_the_winner_last(workdir):
    out = (workdir / "start.out").read_text()
    assert out.index("noise floor: ±") < out.index("[  1/4]")  # before the first trial
    assert out.index("confirming: defaults, ") > out.index("[  4/4]")  # after the last
    assert "round 3/3:" in out
    assert "confirmation (3 interleaved rounds, speed only):" in out
    assert "winner: " in out


def test_list_and_show(workdir):
    listed = run_tune("list", cwd=workdir)
    assert listed.returncode == 0 and "guide-user" in listed.stdout and "4/4" in listed.stdout
    shown = run_tune("show", "guide-user", cwd=workdir)
    assert shown.returncode == 0, shown.stderr
    assert "guide_card" in shown.stdout and "decode tok/s" in shown.stdout
    assert "ngl=0" in shown.stdout  # the layers offloaded, in every settings cell (none on this CPU study)


def test_list_show_explain_and_confirm_speak_json_for_scripts(workdir, tmp_path):
    listed = json.loads(run_tune("list", "--json", cwd=workdir).stdout)
    (study,) = [s for s in listed["studies"] if s["study"] == "guide-user"]
    assert study["trials"] == 4 and study["objective"] == "requests_per_min" and study["best_trial"] is not None
    shown = json.loads(run_tune("show", "guide-user", "--json", cwd=workdir).stdout)
    assert shown["trials"]["complete"] == 4 and set(shown["baselines"]) == {"defaults", "guide_card", "yours"}
    best = shown["best"]
    assert best["source"] == "confirmed" and shown["trial_readings"]["best"]["source"] == "trial"
    assert {"median", "iqr", "samples"} <= set(best["requests_per_min"]) and best["feasible"] is True
    assert shown["noise_floor"]["relative"] >= 0 and shown["picked"].startswith("confirmed by re-measurement")
    assert shown["confirmation"]["winner"] == best["trial"]
    explained = json.loads(run_tune("explain", "guide-user", "--json", cwd=workdir).stdout)
    assert set(explained["importances"]) == {"requests_per_min", "kld_mean"} and explained["guide_audit"] is None
    # confirm stores a new confirmation (and ablates again): on a study of one searched change,
    # prompt threads 1, whose ablation is one group (the shared study's can be five: 45 s instead of 15)
    (tmp_path / "one.yaml").write_text("name: one-change\nparams:\n  n_threads_batch: {choices: [1]}\n")
    started = run_tune("start", "--trials", "3", "--study", "one", "--space", "one.yaml", "--no-racing", "--no-quality", "--confirm-rounds", "0", *SMALL_ARGS, cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    confirmed = run_tune("confirm", "one", "--json", "--candidates", "1", cwd=tmp_path)
    assert confirmed.returncode == 0, confirmed.stderr
    again = json.loads(confirmed.stdout)  # one JSON object: the notes are not printed
    assert again["confirmation"]["rounds"] == 3 and len(again["confirmation"]["candidates"]) == 2  # the guide card and #2


def test_export_and_bench_the_preset(workdir):
    preset = workdir / "best.yaml"
    exported = run_tune("export", "guide-user", "--out", str(preset), cwd=workdir)
    assert exported.returncode == 0, exported.stderr
    bench = run_tune("bench", "--preset", str(preset), "--json", *SMALL_ARGS, cwd=workdir)
    assert bench.returncode == 0, bench.stderr
    data = json.loads(bench.stdout)
    for key in ("prompt_tok_s", "decode_tok_s"):
        assert {"median", "iqr", "samples"} <= set(data[key])
        assert len(data[key]["samples"]) == 3
    settings = yaml.safe_load(preset.read_text())
    for key in ("n_batch", "n_ubatch", "n_threads", "n_threads_batch", "flash_attn", "type_k", "type_v"):
        assert data["effective"][key] == settings["engine"][key], key  # the preset's settings ran
    for key in ("temperature", "top_k", "top_p", "min_p"):
        assert data["effective"][key] == settings["sampling"][key], key
    for key in ("kld_mean", "kld_p99", "top1_agreement", "task_accuracy", "gen_nll", "kept_mass"):
        assert isinstance(data[key], float), key
    assert data["version"] == 2 and isinstance(data["cached"], bool)


def test_bench_with_set(workdir):
    bench = run_tune("bench", "--set", "n_threads=2", "--set", "flash_attn=true", "--json", "--no-quality", *SMALL_ARGS, cwd=workdir)
    assert bench.returncode == 0, bench.stderr
    data = json.loads(bench.stdout)
    assert data["effective"]["n_threads"] == 2 and data["effective"]["flash_attn"] is True
    assert "kld_mean" not in data


def test_bench_runs_in_a_worker_whose_failure_is_one_line(tmp_path):
    """A worker that dies or hangs during `tune bench` fails the command with one line, like a
    trial: here a real timeout (400 generated tokens cannot finish in 1 s on any CPU)."""
    bench = run_tune("bench", "--no-quality", "--prompt-tokens", "64", "--gen-tokens", "400", "--trial-timeout", "1", cwd=tmp_path)
    _one_line_error(bench, "timed out after 1 s (worker killed)")
    assert bench.stdout == ""


def test_resume_to_a_larger_target(workdir, tmp_path):
    import shutil

    shutil.copytree(workdir / "studies", tmp_path / "studies")
    # the study's quality proxy comes along; confirmation after a resume: tests/test_recovery.py
    result = run_tune("resume", "guide-user", "--trials", "5", "--confirm-rounds", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resuming study 'guide-user': 4/5" in result.stdout
    assert "[  5/5]" in result.stdout


def test_start_on_a_missing_model(tmp_path):
    _one_line_error(run_tune("start", "--model", str(tmp_path / "nope.gguf"), cwd=tmp_path), "does not exist", "--model")
    assert not (tmp_path / "studies").exists()


def test_start_on_a_directory_as_model(tmp_path):
    _one_line_error(run_tune("start", "--model", str(tmp_path), cwd=tmp_path), "is a directory")


def test_start_on_a_file_that_is_not_gguf(tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"PK\x03\x04 definitely a zip")
    _one_line_error(run_tune("start", "--model", str(bogus), cwd=tmp_path), "not a GGUF file")


@pytest.mark.parametrize(
    ("keep", "message"),
    [
        (lambda size: 1 << 20, "GGUF header is truncated"),  # cut inside the metadata
        (lambda size: size - (1 << 20), "llama.cpp could not load"),  # header intact, tensors cut
    ],
)
def test_start_on_a_truncated_gguf(tmp_path, model_path, keep, message):
    data = model_path.read_bytes()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(data[: keep(len(data))])
    _one_line_error(run_tune("start", "--model", str(truncated), cwd=tmp_path), message, "truncated")
    assert not (tmp_path / "studies" / "tuner.db").exists()


def test_existing_study_name_points_to_resume(workdir):
    before = _storage_snapshot(workdir)
    _one_line_error(run_tune("start", "--trials", "3", "--study", "guide-user", *SMALL_ARGS, cwd=workdir), "tune resume guide-user")
    assert _storage_snapshot(workdir) == before


@pytest.mark.parametrize("trials", ["0", "-3"])
def test_no_trials(workdir, trials):
    before = _storage_snapshot(workdir)
    _one_line_error(run_tune("start", "--trials", trials, cwd=workdir), "--trials")
    _one_line_error(run_tune("resume", "guide-user", "--trials", trials, cwd=workdir), "--trials")
    assert _storage_snapshot(workdir) == before


def test_bad_space_file_leaves_storage_unchanged(workdir):
    bad = workdir / "bad.yaml"
    bad.write_text("params:\n  n_threads: {low: 4, high: 1}\n")
    before = _storage_snapshot(workdir)
    _one_line_error(run_tune("start", "--space", str(bad), "--study", "x", cwd=workdir), "low=4 is greater than high=1")
    assert _storage_snapshot(workdir) == before


def test_unknown_study(workdir):
    for command in ("resume", "show", "export"):
        _one_line_error(run_tune(command, "nope", cwd=workdir), "study 'nope' does not exist", "guide-user")


def test_bad_storage_url(workdir):
    _one_line_error(run_tune("list", "--storage", "nosuchdb://x", cwd=workdir), "nosuchdb")


def test_bench_unknown_setting(tmp_path):
    _one_line_error(run_tune("bench", "--set", "n_thread=2", cwd=tmp_path), "unknown key 'n_thread'", "n_threads")


def test_bench_preset_with_unknown_key(tmp_path, model_path):
    preset = tmp_path / "p.yaml"
    preset.write_text(f"model: {model_path}\nengine: {{n_ctx: 512, mul_mat_q: true}}\nsampling: {{}}\n")
    _one_line_error(run_tune("bench", "--preset", str(preset), cwd=tmp_path), "unknown engine key 'mul_mat_q'")


def test_debug_shows_the_traceback(tmp_path):
    result = run_tune("--debug", "start", "--model", str(tmp_path / "nope.gguf"), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" in result.stderr


def test_usage_errors_exit_2(tmp_path):
    result = run_tune("start", "--trials", "many", cwd=tmp_path)
    assert result.returncode == 2


def test_help_shows_each_option_default_in_words(tmp_path):
    # Rich reads "[default: ...]" in a help text as markup and drops it ("Study name ."): each
    # option's default is written in parentheses, and every one reaches the reader.
    result = run_tune("start", "--help", cwd=tmp_path, env={"COLUMNS": "400"})
    assert result.returncode == 0
    for default in ("(default: from the model file name)", "(default: from the hardware)", "(default: sqlite:///studies/tuner.db)", "(default: chat)"):
        assert default in result.stdout


def test_doctor_json_describes_this_machine(tmp_path):
    import os

    result = run_tune("doctor", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["cpu"]["logical_cores"] == len(os.sched_getaffinity(0))
    assert isinstance(data["gpus"], list) and isinstance(data["gpu_offload"], bool)
    assert len(data["fingerprint"]) == 16
    assert data["space"]["name"] == ("rtx4090" if data["gpu_offload"] and data["gpus"] else "cpu")
    assert "cpu" in [d["kind"] for d in data["llama_devices"]]  # llama.cpp's own list: the CPU at least
    human = run_tune("doctor", cwd=tmp_path)
    assert human.returncode == 0 and data["fingerprint"] in human.stdout
    assert any(line.startswith("devices:") and "(cpu, " in line for line in human.stdout.splitlines())


def test_resume_on_another_machine_is_refused(workdir, tmp_path):
    import shutil

    import optuna

    shutil.copytree(workdir / "studies", tmp_path / "studies")
    url = f"sqlite:///{tmp_path / 'studies' / 'tuner.db'}"
    study = optuna.load_study(study_name="guide-user", storage=url)
    machine = dict(study.user_attrs["machine"], fingerprint="0000000000000000", cpu_model="Some Other CPU")
    study.set_user_attr("machine", machine)
    before = _storage_snapshot(tmp_path)
    _one_line_error(run_tune("resume", "guide-user", "--trials", "5", cwd=tmp_path), "another machine", "cpu_model", "--allow-other-hardware")
    assert _storage_snapshot(tmp_path) == before
    allowed = run_tune("resume", "guide-user", "--allow-other-hardware", cwd=tmp_path)  # at target: runs nothing
    assert allowed.returncode == 0, allowed.stderr
