"""A git source a tenant may not have is refused at submit in every spelling, a name by
what it resolves to (resolver faked); the exemption is the admin's and the prefixes'."""

import pytest

from farm.errors import Forbidden
from farm.models import JobSpec
from farm.permissions import check_job, git_port, source_exempt
from farm.settings import TenantConfig

ALICE = TenantConfig(name="alice", token_sha256="0" * 64)
MIRROR = TenantConfig(name="mirror", token_sha256="1" * 64,
                      git_url_prefixes=["file:///srv/mirrors/", "https://git.corp.internal/", "ssh://git@127.1/"])  # fmt: skip
HOSTS = {"git.example.com": ["140.82.112.3"], "vm": ["127.0.0.1"], "git.corp.internal": ["10.0.0.5"]}


def fake(host: str) -> list[str] | None:
    return HOSTS.get(host.rstrip("."))


def spec(url: str) -> JobSpec:
    return JobSpec(steps=[{"name": "s", "run": "true"}], source={"git": {"url": url}})


# Found by an outside tester (issue 24): each was accepted and its checkout reached the node.
REFUSED = [
    ("https://127.1:8080/x", "'127.1' is 127.0.0.1 (loopback)"),
    ("https://2130706433:8080/x", "'2130706433' is 127.0.0.1 (loopback)"),
    ("https://0x7f000001:8080/x", "'0x7f000001' is 127.0.0.1 (loopback)"),
    ("https://0:8080/x", "'0' is 0.0.0.0 (unspecified)"),
    ("https://0177.0.0.1/x", "'0177.0.0.1' is 127.0.0.1 (loopback)"),
    ("https://[::ffff:127.0.0.1]:8080/x", "'::ffff:127.0.0.1' is ::ffff:7f00:1 (loopback: 127.0.0.1)"),
    ("https://[::ffff:7f00:1]/x", "'::ffff:7f00:1' is ::ffff:7f00:1 (loopback: 127.0.0.1)"),
    ("https://localhost./x", "'localhost.' names this node (localhost)"),
    ("https://vm:8080/x", "'vm' resolves to 127.0.0.1 (loopback)"),
    ("https://VM./x", "'vm.' resolves to 127.0.0.1 (loopback)"),
    ("ssh://127.1/x", "'127.1' is 127.0.0.1 (loopback)"),
    ("ssh://git@[::1]:22/x", "'::1' is ::1 (loopback)"),
    ("git@127.1:x", "'127.1' is 127.0.0.1 (loopback)"),
    ("git@vm:x", "'vm' resolves to 127.0.0.1 (loopback)"),
    ("https://10.0.0.1/x", "'10.0.0.1' is 10.0.0.1 (private)"),
    ("https://192.168.1.1/x", "'192.168.1.1' is 192.168.1.1 (private)"),
    ("https://100.64.0.1/x", "'100.64.0.1' is 100.64.0.1 (shared address space)"),
    ("https://[fd00::1]/x", "'fd00::1' is fd00::1 (private)"),
    ("https://169.254.169.254/latest", "'169.254.169.254' is 169.254.169.254 (link-local)"),
    ("https://git.corp.internal/x", "'git.corp.internal' resolves to 10.0.0.5 (private)"),
    ("https://%31%32%37.0.0.1/x", "'%31%32%37.0.0.1' is not a plain host name or address"),
    ("https://user@127.1/x", "'127.1' is 127.0.0.1 (loopback)"),
    ("https:///x", "'' names no host"),
]


@pytest.mark.parametrize(("url", "why"), REFUSED)
def test_a_tenant_is_refused_every_spelling_of_a_host_that_is_not_public(url, why):
    with pytest.raises(Forbidden) as e:
        check_job(spec(url), ALICE, admin=False, resolve=fake)
    assert f"its host {why}" in str(e.value) and "git_url_prefixes" in str(e.value)
    assert not source_exempt(spec(url), ALICE, admin=False)


@pytest.mark.parametrize("url", ["https://git.example.com/a.git", "ssh://git@git.example.com/a.git", "git@git.example.com:a.git",
                                 "https://140.82.112.3/a.git", "https://[2606:4700::1111]/a.git", "https://nowhere.example.com/a"])  # fmt: skip
def test_public_hosts_and_names_that_do_not_resolve_pass(url):
    check_job(spec(url), ALICE, admin=False, resolve=fake)
    assert not source_exempt(spec(url), ALICE, admin=False)


def test_literal_addresses_are_refused_without_a_resolver():
    with pytest.raises(Forbidden):
        check_job(spec("https://0x7f000001/x"), ALICE, admin=False)


@pytest.mark.parametrize("url", ["file:///srv/mirrors/app.git", "https://git.corp.internal/app.git", "ssh://git@127.1/app.git"])
def test_urls_under_a_tenants_prefixes_and_the_admins_are_exempt(url):
    check_job(spec(url), MIRROR, admin=False, resolve=fake)
    assert source_exempt(spec(url), MIRROR, admin=False)
    with pytest.raises(Forbidden):
        check_job(spec(url), ALICE, admin=False, resolve=fake)
    check_job(spec(url), None, admin=True, resolve=fake)
    assert source_exempt(spec(url), None, admin=True)


def test_only_https_and_ssh_without_an_exemption():
    for url in ("file:///etc", "/srv/repo", "ext::sh -c id", "git://140.82.112.3/x", "http://140.82.112.3/x"):
        with pytest.raises(Forbidden, match="only https and ssh"):
            check_job(spec(url), ALICE, admin=False, resolve=fake)


def test_a_job_without_a_source_is_never_exempt():
    assert not source_exempt(JobSpec(steps=[{"name": "s", "run": "true"}]), MIRROR, admin=True)


def test_a_port_that_is_not_a_port_is_refused():
    with pytest.raises(Forbidden, match="port"):
        check_job(spec("https://git.example.com:99999/x"), ALICE, admin=False, resolve=fake)
    assert git_port("https://h:8443/x") == 8443 and git_port("git@h:x") is None and git_port("https://h/x") is None
