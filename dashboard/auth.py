"""Access control (placeholder until the hosting issue: allows everything in local mode)."""
from __future__ import annotations


def init_auth(server, config) -> None:
    if config.hosted:
        raise RuntimeError("authentication is not implemented yet; do not host this build")
