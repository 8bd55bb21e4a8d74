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
  and unencrypted; `ext::` runs a command. Nor an https or ssh URL to this node's own
  addresses (loopback, link-local like a cloud's metadata service): the checkout runs on
  the executor's host, on its network, whatever the job's `network` says. A tenant may use
  such a URL only when it starts with one of its `tenants[].git_url_prefixes` (e.g.
  `file:///srv/mirrors/`).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

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


def _node_local(host: str) -> bool:
    """Loopback, link-local or unspecified: this node itself, or its cloud's metadata."""
    host = host.strip("[]").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_link_local or ip.is_unspecified


def check_job(spec: JobSpec, tenant: TenantConfig | None, *, admin: bool) -> None:
    """Raise Forbidden when the spec asks for something the caller may not have."""
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
    if spec.source and spec.source.git:
        url = spec.source.git.url
        if git_protocol(url) not in ("https", "ssh") or _node_local(git_host(url)):
            prefixes = tenant.git_url_prefixes if tenant else []
            if not any(url.startswith(p) for p in prefixes):
                raise Forbidden(f"git URL {url[:100]!r}: only https and ssh sources beyond this node are allowed, "
                                "or URLs under one of the tenant's git_url_prefixes")  # fmt: skip
