"""Joining a Ray cluster, explained (issue 24): Ray's failures to join, as Ray 2.60 raises
them, become a `RayUnavailable` that names token auth and what to set, rendered as one line
with exit code 2 (a setting to fix) or 3 (out of reach). The real cluster: tests/e2e/test_ray_auth.py."""

from __future__ import annotations

import signal

import pytest
from typer.testing import CliRunner

from farm.cli import app
from farm.cli.output import UNREACHABLE, USAGE, render
from farm.embedded import EmbeddedFarm, RayUnavailable, ray_join_error

ADDRESS = "10.0.0.5:6379"
# What ray.init's ConnectionError wraps when the GCS refuses a missing or wrong token: the last
# retry's traceback, as text (ray/_private/node.py `_init_gcs_client`).
REFUSED = ('Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n  File "ray/_private/node.py", '
           'line 996, in _init_gcs_client\n    client = GcsClient(\nray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: '
           "Authentication token is missing or incorrect. Note: RAY_AUTH_MODE is currently 'disabled' (not 'token').")  # fmt: skip
TIMED_OUT = ('Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n  File "ray/_private/node.py", '
             "line 996, in _init_gcs_client\nray.exceptions.RpcError: failed to connect to all addresses; last error: UNKNOWN: "
             "ipv4:10.0.0.5:6379: Failed to connect to remote host: Connection refused")  # fmt: skip


class AuthenticationError(Exception):
    """Stands in for ray.exceptions.AuthenticationError (matched by name: no Ray imported here)."""


def _joined(cause: Exception) -> ConnectionError:
    """ray.init's own error: `ConnectionError: Failed to connect to Ray cluster at …` from its cause."""
    try:
        try:
            raise cause
        except Exception as e:
            raise ConnectionError(f"Failed to connect to Ray cluster at {ADDRESS}") from e
    except ConnectionError as e:
        return e


def test_no_token_sent_names_the_settings(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    e = ray_join_error(ADDRESS, _joined(RuntimeError(REFUSED)))
    assert isinstance(e, RayUnavailable) and e.auth
    assert "token authentication" in str(e) and "RAY_AUTH_MODE is unset here" in str(e)
    assert "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=" in str(e) and ADDRESS in str(e)
    code, text = render(e)
    assert code == USAGE and "\n" not in text and "internal error" not in text


def test_token_mode_without_a_token(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    e = ray_join_error(ADDRESS, AuthenticationError("Token authentication is enabled but no authentication token was found"))
    assert e is not None and e.auth and "found no token" in str(e) and "RAY_AUTH_TOKEN=" in str(e)


def test_a_wrong_token(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    e = ray_join_error(ADDRESS, _joined(RuntimeError(REFUSED)))
    assert e is not None and e.auth and "refused the token farm sent" in str(e) and "RAY_AUTH_MODE=token" in str(e)


def test_a_cluster_out_of_reach_is_exit_3_and_other_errors_pass():
    e = ray_join_error(ADDRESS, _joined(RuntimeError(TIMED_OUT)))
    assert isinstance(e, RayUnavailable) and not e.auth and "token" not in str(e)
    assert render(e)[0] == UNREACHABLE
    assert ray_join_error(ADDRESS, ValueError("_node_name cannot be configured")) is None


@pytest.mark.parametrize("auth, code", [(True, USAGE), (False, UNREACHABLE)])
def test_farm_up_exits_with_the_code_and_one_line(monkeypatch, tmp_path, auth, code):
    def start(self):  # type: ignore[no-untyped-def]
        raise RayUnavailable(f"cannot join the Ray cluster at {ADDRESS}: why", auth=auth)

    monkeypatch.setattr(EmbeddedFarm, "start", start)
    monkeypatch.setattr(EmbeddedFarm, "stop", lambda self, drain_timeout_s=10.0: None)
    monkeypatch.setenv("FARM_DATA_DIR", str(tmp_path))
    handler = signal.getsignal(signal.SIGTERM)
    try:
        result = CliRunner().invoke(app, ["up", "--ray-address", ADDRESS])
    finally:
        signal.signal(signal.SIGTERM, handler)  # `up` takes SIGTERM over: give pytest's back
    assert result.exit_code == code, result.output
    assert f"farm up failed: cannot join the Ray cluster at {ADDRESS}: why" in result.output
