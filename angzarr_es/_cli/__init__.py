"""Subcommands of the `angzarr-es` command line, one module each (`run(args) -> int`)."""
