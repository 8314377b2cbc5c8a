"""`python -m dva.cli`: the `dva` command."""

from dva.cli import main

main()
