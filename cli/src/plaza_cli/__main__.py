"""`python -m plaza_cli ...`: the `plaza` command, for where its script is not on PATH."""

from plaza_cli.main import main

main()
