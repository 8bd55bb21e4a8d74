"""A small HTTP client for the farm API, used by the CLI (and handy in scripts).

It finds its server and token the way a user expects (farm/contexts.py): FARM_URL and
FARM_TOKEN, else the current context (`farm up` and `farm login` make them), else
http://127.0.0.1:8080 with the admin token `farm up` left in FARM_DATA_DIR (~/.farm).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from farm.contexts import resolve
from farm.errors import FarmError


class ApiError(FarmError):
    def __init__(self, status: int, detail: Any, *, url: str = "", hint: str = "") -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail, self.url, self.hint = status, detail, url, hint


class Unreachable(FarmError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach farm at {url}: {reason}")
        self.url, self.reason = url, reason
        self.hint = "Is farm running there? `farm up` (it makes itself the current context), FARM_URL, or `farm context ls`."


class FarmClient:
    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0) -> None:
        found = resolve()
        self.url = (url or found.url).rstrip("/")
        token = token or found.token
        self.token = token
        self.source = "the caller" if token and token != found.token else found.source
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def _check(self, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text
            hint = (f"The token came from {self.source}. Set FARM_TOKEN, keep one with `farm login {self.url}` (token on "
                    "stdin), or switch with `farm context use NAME`.") if r.status_code == 401 else ""  # fmt: skip
            raise ApiError(r.status_code, detail, url=self.url, hint=hint)
        return r

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return self._check(self.http.request(method, path, **kw))
        except httpx.TransportError as e:
            raise Unreachable(self.url, str(e) or type(e).__name__) from e

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/v1/jobs", json=spec).json()

    def get(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}").json()

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/cancel").json()

    def wait_reason(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}/wait").json()

    def queue(self) -> dict[str, Any]:
        return self._request("GET", "/v1/queue").json()

    def caches(self, key_prefix: str = "") -> dict[str, Any]:
        return self._request("GET", "/v1/caches", params={"key_prefix": key_prefix}).json()

    def delete_cache(self, key: str, ref: str | None = None) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/caches/{key}", params={"ref": ref} if ref else None).json()

    def jobs(self, **filters: Any) -> dict[str, Any]:
        """One page of jobs, newest first: filters state, pool, tenant (admin), limit, cursor."""
        return self._request("GET", "/v1/jobs", params={k: v for k, v in filters.items() if v is not None}).json()

    def rerun(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/rerun").json()

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/v1/jobs/{job_id}/artifacts").json()

    def artifact(self, job_id: str, name: str, into: Any) -> int:
        """Write one artifact's bytes to the file object `into`; how many."""
        n = 0
        try:
            with self.http.stream("GET", f"/v1/jobs/{job_id}/artifacts/{name}", timeout=None) as r:
                if r.status_code >= 400:
                    r.read()
                    self._check(r)
                for chunk in r.iter_bytes():
                    into.write(chunk)
                    n += len(chunk)
        except httpx.TransportError as e:
            raise Unreachable(self.url, str(e) or type(e).__name__) from e
        return n

    def executors(self, pool: str | None = None) -> dict[str, Any]:
        return self._request("GET", "/v1/executors", params={"pool": pool} if pool else None).json()

    def pools(self) -> dict[str, Any]:
        return self._request("GET", "/v1/pools").json()

    def policy(self, pool: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/pools/{pool}/policy").json()

    def set_policy(self, pool: str, policy: dict[str, Any], if_match: int | str | None = None) -> dict[str, Any]:
        """If-Match: a version (3), an ETag ('"3"') or '*'."""
        headers = {"If-Match": str(if_match)} if if_match is not None else None
        return self._request("PUT", f"/v1/pools/{pool}/policy", json=policy, headers=headers).json()

    def seed_policy(
        self, pool: str, hours: list[dict[str, Any]], last_hour: int | None = None, *, more: bool = False
    ) -> dict[str, Any]:
        """One seed, or one part of it: `more` (with the seed's `last_hour`) when parts follow."""
        body: dict[str, Any] = {"hours": hours} if last_hour is None else {"hours": hours, "last_hour": last_hour}
        if more:
            body["more"] = True
        return self._request("POST", f"/v1/pools/{pool}/policy/seed", json=body).json()

    def demand_history(self, pool: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/pools/{pool}/history").json()

    def policy_history(self, pool: str, limit: int = 100) -> dict[str, Any]:
        return self._request("GET", f"/v1/pools/{pool}/policy/history", params={"limit": limit}).json()

    def decisions(self, pool: str, limit: int = 100) -> dict[str, Any]:
        return self._request("GET", f"/v1/pools/{pool}/decisions", params={"limit": limit}).json()

    def log(self, job_id: str, *, timestamps: bool = False) -> str:
        return self._request("GET", f"/v1/jobs/{job_id}/log", params={"timestamps": "true"} if timestamps else None).text

    def follow(self, job_id: str, *, offset: int = 0, timestamps: bool = False) -> Iterator[str]:
        params = {"follow": "true", **({"offset": str(offset)} if offset else {}), **({"timestamps": "true"} if timestamps else {})}
        try:
            with self.http.stream("GET", f"/v1/jobs/{job_id}/log", params=params, timeout=None) as r:
                if r.status_code >= 400:
                    r.read()
                    self._check(r)
                yield from r.iter_text()
        except httpx.TransportError as e:
            raise Unreachable(self.url, str(e) or type(e).__name__) from e

    def submit_run(self, spec: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._request("POST", "/v1/runs", json=spec, headers=headers).json()

    def run(self, run_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/runs/{run_id}").json()

    def runs(self, **filters: Any) -> dict[str, Any]:
        """One page of runs, newest first: filters state, name, tenant (admin), limit, cursor."""
        return self._request("GET", "/v1/runs", params={k: v for k, v in filters.items() if v is not None}).json()

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/runs/{run_id}/cancel").json()

    def audit(self, **filters: Any) -> dict[str, Any]:
        """One page of the audit trail, newest first: filters actor, action, since, tenant (admin), limit, cursor."""
        return self._request("GET", "/v1/audit", params={k: v for k, v in filters.items() if v is not None}).json()

    def audit_export(self, **filters: Any) -> Iterator[str]:
        """The audit trail as JSON lines (one record a line, oldest first): filters as `audit`'s, without limit and cursor."""
        params = {**{k: v for k, v in filters.items() if v is not None}, "format": "jsonl"}
        try:
            with self.http.stream("GET", "/v1/audit", params=params) as r:
                if r.status_code >= 400:
                    r.read()
                    self._check(r)
                yield from (line for line in r.iter_lines() if line)
        except httpx.TransportError as e:
            raise Unreachable(self.url, str(e) or type(e).__name__) from e

    # Notifications (farm.notify): `tenant` is for the admin token; a tenant's reaches its own.
    def notifications(self, tenant: str | None = None) -> dict[str, Any]:
        return self._request("GET", "/v1/notifications", params={"tenant": tenant} if tenant else None).json()

    def add_notification(self, spec: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
        return self._request("POST", "/v1/notifications", json=spec, params={"tenant": tenant} if tenant else None).json()

    def remove_notification(self, sub_id: str, tenant: str | None = None) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/notifications/{sub_id}", params={"tenant": tenant} if tenant else None).json()

    def dead_letters(self, tenant: str | None = None, limit: int = 100) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, **({"tenant": tenant} if tenant else {})}
        return self._request("GET", "/v1/notifications/dead-letters", params=params).json()

    def whoami(self) -> dict[str, Any]:
        return self._request("GET", "/v1/whoami").json()

    def login(self) -> dict[str, Any]:
        return self._request("POST", "/v1/login").json()

    def create_tenant(self, name: str, weight: float = 1.0) -> dict[str, Any]:
        return self._request("POST", "/v1/tenants", json={"name": name, "weight": weight}).json()

    def tenants(self) -> dict[str, Any]:
        return self._request("GET", "/v1/tenants").json()

    def set_tenant_disabled(self, name: str, disabled: bool) -> dict[str, Any]:
        return self._request("POST", f"/v1/tenants/{name}/{'disable' if disabled else 'enable'}").json()

    def create_token(self, **body: Any) -> dict[str, Any]:
        return self._request("POST", "/v1/tokens", json={k: v for k, v in body.items() if v is not None}).json()

    def tokens(self, tenant: str | None = None) -> dict[str, Any]:
        return self._request("GET", "/v1/tokens", params={"tenant": tenant} if tenant else None).json()

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/tokens/{token_id}/revoke").json()

    def rotate_token(self, token_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/tokens/{token_id}/rotate").json()

    def close(self) -> None:
        self.http.close()
