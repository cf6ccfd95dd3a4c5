"""`tune start --baseline FILE`: the user's own settings measured as "yours", every ratio shown
against them, and a preset that keeps their context and sampling unless a change measurably pays."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import run_tune


@pytest.fixture(scope="module")
def yours(cli_study) -> tuple[Path, str]:
    """The shared study 'guide-user' (tests/conftest.py): 3 baselines (defaults, guide card, yours
    from before.yaml) and 1 searched trial, confirmed and ablated; and what `tune start` printed."""
    return cli_study, (cli_study / "start.out").read_text()


def test_start_says_what_it_keeps_and_measures_yours_beside_the_baselines(yours):
    _, out = yours
    assert "context: n_ctx 4096 required (your baseline's n_ctx); searched: 4096, 8192; the preset never carries less" in out
    assert "starting point: your settings from before.yaml (measured as 'yours')" in out
    assert "trial #2   yours" in out
    header = next(line for line in out.splitlines() if line.startswith("config "))
    assert "vs defaults" in header and "vs yours" in header
    assert any(line.startswith("yours ") and "1.00x" in line for line in out.splitlines())
    assert "\nablation (what each change from your settings to the winner" in out
    assert "minimal preset: your settings + " in out


def test_the_preset_keeps_your_context_and_sampling_unless_a_change_pays(yours):
    cwd, _ = yours
    result = run_tune("export", "guide-user", cwd=cwd)
    assert result.returncode == 0, result.stderr
    preset = yaml.safe_load(result.stdout)
    measured, engine, sampling = preset["measured"], preset["engine"], preset["sampling"]
    kept = {row["group"] for row in measured["ablation"] if row["kept"]}
    assert engine["n_ctx"] >= 4096  # never less than the requirement
    if "context" not in kept:  # a larger one only when the ablation kept it, saying what it was worth
        assert engine["n_ctx"] == 4096
    else:
        assert "n_ctx" in measured["changes"]
    if "sampling" not in kept:
        assert (sampling["top_k"], sampling["top_p"]) == (20, 0.9)
    if "batch sizes" not in kept:
        assert engine["n_batch"] == 2048
    changed = set(measured.get("changes", {}))
    for knob in ("n_batch", "n_threads", "top_k", "top_p"):  # every change has a kept row
        assert knob not in changed or any(knob in row["change"] for row in measured["ablation"] if row["kept"])
    assert measured["starting_point"] == "yours" and measured["vs_yours"] > 0
    assert measured["requirement"] == {"n_ctx": 4096, "why": "your baseline's n_ctx"}
    assert preset["provenance"]["preset"] == "minimal (ablated)"


def test_full_exports_the_raw_winner_and_every_format_follows_the_choice(yours):
    cwd, _ = yours
    minimal = yaml.safe_load(run_tune("export", "guide-user", cwd=cwd).stdout)
    full = yaml.safe_load(run_tune("export", "guide-user", "--full", cwd=cwd).stdout)
    assert full["provenance"]["preset"] == "winner"
    assert full["engine"]["n_ctx"] >= 4096
    server = run_tune("export", "guide-user", "--format", "llama-server", cwd=cwd).stdout
    assert f"-c {minimal['engine']['n_ctx']}" in server and f"--top-k {minimal['sampling']['top_k']}" in server
    server_full = run_tune("export", "guide-user", "--format", "llama-server", "--full", cwd=cwd).stdout
    assert f"--top-k {full['sampling']['top_k']}" in server_full


def test_show_prints_the_ablation_table(yours):
    cwd, _ = yours
    result = run_tune("show", "guide-user", cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert "ablation (what each change from your settings" in result.stdout
    assert "worth (range)" in result.stdout and "verdict" in result.stdout
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("config "))
    assert lines[header + 2].startswith("minimal ")  # the table leads with the preset tune export writes
