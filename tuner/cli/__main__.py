"""`python -m tuner.cli`: the same entry point as the `tune` command."""

from tuner.cli import main

main()
