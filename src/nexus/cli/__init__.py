"""The ``nexus`` command line: Typer commands, one group per domain."""
