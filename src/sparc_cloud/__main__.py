"""`python -m sparc_cloud` entry point."""

from sparc_cloud.cli import main

main()
