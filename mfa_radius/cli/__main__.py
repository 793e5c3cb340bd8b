"""`python -m mfa_radius.cli`: the same as the `mfa-radius` console script."""

from . import main

main(prog_name="mfa-radius")
