"""Royalty engine: the `royalty` command line, configuration and logging."""
