"""``python -m pygen``: the pygen command (also what ``torchrun -m pygen`` runs)."""

from pygen.cli import run

raise SystemExit(run())
