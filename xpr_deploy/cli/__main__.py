"""`python -m xpr_deploy.cli` (and `torchrun -m xpr_deploy.cli train ...`)."""

from xpr_deploy.cli import main

main()
