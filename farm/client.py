"""A small HTTP client for the farm API, used by the CLI (and handy in scripts).

It finds its server and token the way a user expects: FARM_URL (default
http://127.0.0.1:8080) and FARM_TOKEN, else the admin token that `farm up` left in the data
dir (FARM_DATA_DIR, default ~/.farm).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from farm.errors import FarmError


class ApiError(FarmError):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


def default_token() -> str | None:
    if token := os.environ.get("FARM_TOKEN"):
        return token
    path = Path(os.environ.get("FARM_DATA_DIR", "~/.farm")).expanduser() / "admin-token"
    try:
        return path.read_text().strip()
    except OSError:
        return None


class FarmClient:
    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0) -> None:
        self.url = (url or os.environ.get("FARM_URL") or "http://127.0.0.1:8080").rstrip("/")
        token = token or default_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def _check(self, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text
            raise ApiError(r.status_code, detail)
        return r

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return self._check(self.http.request(method, path, **kw))
        except httpx.TransportError as e:
            raise FarmError(f"cannot reach farm at {self.url}: {e}") from e

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/v1/jobs", json=spec).json()

    def get(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}").json()

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/cancel").json()

    def queue(self) -> dict[str, Any]:
        return self._request("GET", "/v1/queue").json()

    def caches(self, key_prefix: str = "") -> dict[str, Any]:
        return self._request("GET", "/v1/caches", params={"key_prefix": key_prefix}).json()

    def delete_cache(self, key: str, ref: str | None = None) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/caches/{key}", params={"ref": ref} if ref else None).json()

    def log(self, job_id: str) -> str:
        return self._request("GET", f"/v1/jobs/{job_id}/log").text

    def follow(self, job_id: str) -> Iterator[str]:
        try:
            with self.http.stream("GET", f"/v1/jobs/{job_id}/log", params={"follow": "true"}, timeout=None) as r:
                if r.status_code >= 400:
                    r.read()
                    self._check(r)
                yield from r.iter_text()
        except httpx.TransportError as e:
            raise FarmError(f"cannot reach farm at {self.url}: {e}") from e

    def close(self) -> None:
        self.http.close()
