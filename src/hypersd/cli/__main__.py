"""`python -m hypersd.cli ...` (e.g. under `accelerate launch -m hypersd.cli distill ...`)."""

from hypersd.cli import main

main()
