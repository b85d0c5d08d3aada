"""Subcommands of the `royalty` command line, one module per command group."""
