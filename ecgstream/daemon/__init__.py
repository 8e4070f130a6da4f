"""The daemon: its processing loop, what it keeps per device, and its output."""
