"""What a tenant may ask of farm beyond running steps in its own attempt. Pure module.

Three things reach past a job's own attempt. An image job's tags name images on a daemon
that other jobs run steps from (the host's with DooD, the pool's layer stores with DinD):
a tenant tags only under its own name (`<tenant>/...`), so it cannot replace
`farm/busybox:latest` or another tenant's image with a trojan. The other two are per-tenant
permissions that the admin token always has and a tenant has only when its settings say so
(refused with 403 at submit, and at rerun):

- **the host's network** (`network: host` on a job, or on an image build): it reaches
  everything on the node's loopback (Redis, the API, Ray) and its network;
  `tenants[].allow_host_network`.
- **git sources other than https and ssh**: `file://` or a local path clones whatever
  farm's user can read on the executor's host; `http://` and `git://` are unauthenticated
  and unencrypted; `ext::` runs a command. Nor an https or ssh URL whose host is not a
  public address, in any spelling, or a name that resolves to one (farm.addresses): the
  checkout runs on the executor's host, on its network, whatever the job's `network` says.
  A tenant may use such a URL only when it starts with one of its
  `tenants[].git_url_prefixes` (e.g. `file:///srv/mirrors/`).

A name that does not resolve at submit (or not within the API's bound) passes: the executor
resolves the host again at checkout, refuses it there, and pins git to the addresses it
checked. A source admitted under the exemption (`source_exempt`: the admin, or a URL under a
prefix) is recorded with the job, and the executor does not check it.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from farm.addresses import Resolver, check_host, unresolved
from farm.errors import Forbidden
from farm.models import JobSpec
from farm.settings import TenantConfig

# user@host:path, git's scp-like ssh syntax (no "://", and not ext::)
_SCP = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:(?!:)")


def git_protocol(url: str) -> str:
    """The transport git would use for `url`: https, ssh, file, http, git, ext..."""
    if "://" in url:
        return url.split("://", 1)[0].lower()
    if "::" in url:
        return url.split("::", 1)[0].lower()  # <transport>::<address>, e.g. ext::
    if _SCP.match(url):
        return "ssh"
    return "file"


def git_host(url: str) -> str:
    """The host a git URL reaches ('' when it names none)."""
    if "://" in url:
        try:
            return (urlsplit(url).hostname or "").lower()
        except ValueError:
            return ""
    if m := _SCP.match(url):
        return m.group(0).split("@", 1)[1].rstrip(":").lower()
    return ""


def git_port(url: str) -> int | None:
    """The port a git URL names (None: the transport's own). ValueError when it names one
    that is not a port."""
    if "://" not in url:
        return None
    return urlsplit(url).port


def source_exempt(spec: JobSpec, tenant: TenantConfig | None, *, admin: bool) -> bool:
    """Whether the job's git source is admitted under the exemption: the admin's, or a URL
    under one of the tenant's git_url_prefixes. Neither submit nor checkout checks where it
    leads."""
    if spec.source is None or spec.source.git is None:
        return False
    url = spec.source.git.url
    return admin or any(url.startswith(p) for p in (tenant.git_url_prefixes if tenant else []))


def check_job(spec: JobSpec, tenant: TenantConfig | None, *, admin: bool, resolve: Resolver = unresolved) -> None:
    """Raise Forbidden when the spec asks for something the caller may not have. `resolve`
    looks up a git host's name (the default looks up nothing: literal addresses only)."""
    if admin:
        return
    allow_host = tenant is not None and tenant.allow_host_network
    if spec.network == "host" and not allow_host:
        raise Forbidden("network: host needs the tenant permission allow_host_network (it reaches the node's own services)")
    if spec.build is not None and spec.build.network == "host" and not allow_host:
        raise Forbidden("build.network: host needs the tenant permission allow_host_network")
    if spec.build is not None and tenant is not None:
        own = f"{tenant.name.lower()}/"
        foreign = [t for t in spec.build.tags if not t.startswith(own)]
        if foreign:
            raise Forbidden(f"image tags of tenant {tenant.name!r} must start with {own!r} ({foreign[0]!r} does not): "
                            "images other jobs run from are not a tenant's to replace")  # fmt: skip
    if spec.source and spec.source.git and not source_exempt(spec, tenant, admin=admin):
        url = spec.source.git.url
        if git_protocol(url) not in ("https", "ssh"):
            raise Forbidden(f"git URL {url[:100]!r}: only https and ssh sources are allowed, "
                            "or URLs under one of the tenant's git_url_prefixes")  # fmt: skip
        reach = check_host(git_host(url), resolve)
        if reach.refused:
            raise Forbidden(f"git URL {url[:100]!r}: its host {reach.host[:100]!r} {reach.refused}; a checkout runs on the "
                            "executor's host and reaches public addresses only, or URLs under one of the tenant's "
                            "git_url_prefixes")  # fmt: skip
        try:
            git_port(url)
        except ValueError:
            raise Forbidden(f"git URL {url[:100]!r}: its port is not a port number") from None
