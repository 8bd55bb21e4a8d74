"""A checkout's git is pinned to the addresses the executor checked (resolver faked): curl's
resolving for https, ssh's Hostname for ssh; a refused host never reaches git."""

import pytest

from agents.workspace import NO_REDIRECTS, SSH, pin
from farm.errors import SourceRefused

HOSTS = {"git.example.com": ["140.82.112.3", "2606:50c0:8000::153"], "vm": ["127.0.0.1"]}


def fake(host: str) -> list[str] | None:
    return HOSTS.get(host.rstrip("."))


def test_https_is_pinned_for_the_host_and_any_name_at_its_port():
    options, ssh = pin("https://Git.Example.com./org/repo.git", fake)
    pinned = "140.82.112.3,[2606:50c0:8000::153]"
    assert options == [*NO_REDIRECTS, "-c", f"http.curloptResolve=git.example.com.:443:{pinned}",
                       "-c", f"http.curloptResolve=*:443:{pinned}"]  # fmt: skip
    assert ssh == SSH
    options, _ = pin("https://140.82.112.3:8443/x", fake)
    assert options[-1] == "http.curloptResolve=*:8443:140.82.112.3"
    options, _ = pin("https://[2606:4700::1111]/x", fake)
    assert options == [*NO_REDIRECTS, "-c", "http.curloptResolve=*:443:[2606:4700::1111]"]


def test_ssh_is_given_the_checked_address_and_keeps_the_name_for_known_hosts():
    for url in ("ssh://git@git.example.com:2222/x.git", "git@git.example.com:x.git"):
        options, ssh = pin(url, fake)
        assert options == NO_REDIRECTS
        assert ssh == f"{SSH} -o Hostname=140.82.112.3 -o HostKeyAlias=git.example.com"


@pytest.mark.parametrize(
    ("url", "line"),
    [
        ("https://vm:8080/x", "git host vm resolves to 127.0.0.1 (loopback): refused; "),
        ("https://127.1/x", "git host 127.1 is 127.0.0.1 (loopback): refused; "),
        ("git@0x7f000001:x", "git host 0x7f000001 is 127.0.0.1 (loopback): refused; "),
        ("ssh://[::ffff:127.0.0.1]/x", "git host ::ffff:127.0.0.1 is ::ffff:7f00:1 (loopback: 127.0.0.1): refused; "),
        ("git://10.0.0.1/x", "git host 10.0.0.1 is 10.0.0.1 (private): refused; "),
        ("https://nowhere.example.com/x", "git host nowhere.example.com does not resolve: refused"),
        ("https://git.example.com:99999/x", "its port is not a port number"),
    ],
)
def test_a_refused_host_is_a_clear_line_and_no_git(url, line):
    with pytest.raises(SourceRefused) as e:
        pin(url, fake)
    assert line in str(e.value)


def test_a_source_without_a_host_has_nothing_to_pin():
    for url in ("/srv/repo", "file:///srv/mirrors/app.git"):
        assert pin(url, fake) == (NO_REDIRECTS, SSH)
