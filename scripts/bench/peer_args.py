"""Command-line checks the two Python peers share (imported from the scripts' folder)."""

from __future__ import annotations

import argparse


def check_template(ap: argparse.ArgumentParser, flag: str, template: str) -> None:
    """Exits with a usage error unless `template` has only the known placeholders."""
    try:
        template.format(start=0, end=0, limit=0, index=0)
    except (KeyError, IndexError, ValueError) as e:
        ap.error(f"{flag}: bad placeholder: {e}")


def loop_factory(ap: argparse.ArgumentParser, use_uvloop: bool):
    """uvloop's event loop factory when asked for (and installed), else None: asyncio's."""
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        ap.error("--uvloop: uvloop is not installed (pip install uvloop)")
    return uvloop.new_event_loop
