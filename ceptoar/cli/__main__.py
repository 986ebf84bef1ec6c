"""`python -m ceptoar.cli`: the same as the `ceptoar` command."""

from ceptoar.cli import main

main()
