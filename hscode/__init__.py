"""The `hscode` command line: one subcommand per user task."""
