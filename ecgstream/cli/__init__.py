"""The command line: ``ecgstream`` and its subcommands (``main.py`` is the entry point)."""
