"""The shared basics: the types passed between stages, the typed settings, exit codes, backoff."""
