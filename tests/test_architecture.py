"""The shape of the package, checked from its source: layers, no import circles, one job a room.

Every import counts, including the ones inside functions (lazy imports hide circles as well as
module-level ones do). A new module must be given a layer here, on purpose.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tuner"

# Lowest first. A module may import modules of its own layer or below, never above.
LAYERS: list[set[str]] = [
    {"tuner.errors"},
    {"tuner.config", "tuner.stats", "tuner.gguf", "tuner.models", "tuner.devices", "tuner.hardware", "tuner.telemetry", "tuner.llama_log", "tuner.sampling",
     "tuner.server_flags", "tuner.server_binary"},
    {"tuner.engine", "tuner.vocab", "tuner.llama_params", "tuner.server"},  # the llama.cpp drivers: contexts (and their parameters); a vocabulary alone; llama-server
    {"tuner.quality"},
    {"tuner.measure", "tuner.space", "tuner.workload", "tuner.baseline"},
    {"tuner.worker", "tuner.server_worker", "tuner.preset", "tuner.user_requests", "tuner.replay", "tuner.targets", "tuner.placement"},
    {"tuner.study._storage", "tuner.study._trials", "tuner.study.noise"},
    {"tuner.study.confirm", "tuner.study.explain"},
    {"tuner.study._objective", "tuner.study.ablation"},
    {"tuner.study._optimize", "tuner.study._summary", "tuner.study._preset", "tuner.study._eta", "tuner.study.speculation"},
    {"tuner.study"},
    {"tuner.export", "tuner.report._page"},
    {"tuner.report._figures"},
    {"tuner.report"},
    {"tuner.cli", "tuner.cli._app", "tuner.cli._print", "tuner.cli._study_commands", "tuner.cli._result_commands",
     "tuner.cli._tool_commands", "tuner.cli.__main__"},
]
FACADE = "tuner"  # the package __init__ re-exports lazily by name; it imports nothing itself
MAX_LINES = 450


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every tuner module ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    return {name for name in found if name in known}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}


def _layer(name: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if name in layer)


def test_every_module_has_a_layer():
    unplaced = [name for name in _modules() if name != FACADE and not any(name in layer for layer in LAYERS)]
    assert not unplaced, f"give these modules a layer in LAYERS: {unplaced}"


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})"
        for name, targets in _graph().items()
        if name != FACADE
        for target in targets
        if target != FACADE and _layer(target) > _layer(name)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    graph = _graph()
    graph.pop(FACADE, None)
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        for target in sorted(graph.get(name, ())):
            if state.get(target) == "open":
                return path + [name, target]
            if target not in state and (cycle := visit(target, path + [name])):
                return cycle
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name, [])):
            pytest.fail("import circle: " + " -> ".join(cycle[cycle.index(cycle[-1]):]))


def test_nothing_in_the_library_imports_the_cli():
    users = [name for name, targets in _graph().items() if not name.startswith("tuner.cli") and any(t.startswith("tuner.cli") for t in targets)]
    assert not users


def test_every_module_is_short_and_says_its_job():
    for name, path in _modules().items():
        text = path.read_text()
        assert len(text.splitlines()) <= MAX_LINES, f"{name} has {len(text.splitlines())} lines (at most {MAX_LINES})"
        assert ast.get_docstring(ast.parse(text)), f"{name} does not open with a docstring naming its job"


def test_the_cli_starts_without_numpy_optuna_yaml_or_llama_cpp():
    probe = "import sys, tuner.cli; print(' '.join(m for m in ('numpy', 'optuna', 'yaml', 'llama_cpp') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


def test_the_layer_check_sees_imports_inside_functions(tmp_path):
    """The checker itself: a lazy import inside a function is still an import."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from tuner.study import summarize\n    import tuner.engine\n")
    assert _imports(source, {"tuner.study", "tuner.engine"}) == {"tuner.study", "tuner.engine"}
