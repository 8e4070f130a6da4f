"""Subcommands beyond ``beats``: run, enroll, verify, templates, check-config, demo."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register the subcommands (their modules load only when run)."""
