"""Placeholder until the transaction lands."""

from __future__ import annotations

from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    """No routes yet."""
    return []
