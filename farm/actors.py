"""The one module of farm that reaches into `agents`: how executors and wardens become Ray
actors. The API, the CLI and the store never load executor code; what starts executors
(`farm up`, the autoscaler) imports this, lazily, where it starts them."""

from __future__ import annotations

from agents.executor import actor_settings, executor_actor
from agents.lifeline import start as start_lifeline
from agents.warden import ensure_warden

__all__ = ["actor_settings", "ensure_warden", "executor_actor", "start_lifeline"]
