"""`python -m nlpfw` runs the command-line interface."""

from nlpfw.cli import main

main()
