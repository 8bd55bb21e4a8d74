"""The one module of farm that reaches into `agents` (the import-linter contract): the
executor, warden and lifeline that `farm up` and the autoscaler start. It imports them
inside its functions only, so the API, the CLI and the store never load executor code, and
`agents` (which build their actors through farm/ray_seam.py) never meet an import cycle."""

from __future__ import annotations

import subprocess
from typing import Any

from farm.settings import Settings


def executor_actor() -> Any:
    """The executor's Ray actor class (agents/executor.py)."""
    from agents.executor import executor_actor as made

    return made()


def ensure_warden(settings: Settings, instance: str, plain: dict) -> Any:  # type: ignore[type-arg]
    """This node's warden actor for this farm: found, or started (agents/warden.py)."""
    from agents.warden import ensure_warden as ensure

    return ensure(settings, instance, plain)


def start_lifeline(settings_json: str, instance: str) -> subprocess.Popen[bytes]:
    """The process that ends this node's work if `farm up` dies (agents/lifeline.py)."""
    from agents.lifeline import start

    return start(settings_json, instance)
