"""`python -m teaming.cli`: the same as the `teaming` command."""

from teaming.cli import main

main()
