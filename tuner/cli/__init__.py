"""The `tune` command line: every command parses, calls one library function, prints.

* ``_app``              the Typer app, shared options, and the error-to-one-line mapping (:func:`main`)
* ``_study_commands``   start, resume, confirm, explain: commands that measure on a study
* ``_result_commands``  list, show, export, report: commands that read what a study recorded
* ``_tool_commands``    bench, doctor, dashboard
* ``_print``            tables and the text every command prints

Nothing in the library imports this package.
"""

from __future__ import annotations

# Importing a command module registers its commands on ``app``, in import order (`tune --help`
# lists start and resume first).
from tuner.cli import _study_commands  # isort: skip
from tuner.cli import _result_commands, _tool_commands  # isort: skip
from tuner.cli._app import app, main

COMMAND_MODULES = (_study_commands, _result_commands, _tool_commands)

__all__ = ["COMMAND_MODULES", "app", "main"]
