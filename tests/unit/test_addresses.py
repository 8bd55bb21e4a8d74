"""Which hosts a checkout may reach: every spelling of a refused address, with the resolver
faked (issue 24: an outside tester's URLs were accepted and reached the node)."""

from ipaddress import ip_address

import pytest

from farm.addresses import check_host, inet_aton, why_refused

HOSTS = {  # what a fake DNS answers
    "git.example.com": ["140.82.112.3", "2606:50c0:8000::153"],
    "vm": ["127.0.0.1"],
    "rebound.example.com": ["140.82.112.3", "10.0.0.7"],  # one bad answer among good ones
    "internal.example.com": ["192.168.1.10"],
    "v6only.example.com": ["fd12:3456::1"],
    "metadata.example.com": ["169.254.169.254"],
    "mapped.example.com": ["::ffff:127.0.0.1"],
}


def fake(host: str) -> list[str] | None:
    return HOSTS.get(host.rstrip("."))


@pytest.mark.parametrize(
    ("host", "address", "why"),
    [
        ("127.0.0.1", "127.0.0.1", "loopback"),
        ("127.1", "127.0.0.1", "loopback"),
        ("2130706433", "127.0.0.1", "loopback"),
        ("0x7f000001", "127.0.0.1", "loopback"),
        ("0X7F000001", "127.0.0.1", "loopback"),
        ("0x7f.1", "127.0.0.1", "loopback"),
        ("0177.0.0.1", "127.0.0.1", "loopback"),
        ("0", "0.0.0.0", "unspecified"),
        ("0.0.0.0", "0.0.0.0", "unspecified"),
        ("127.0.0.1.", "127.0.0.1", "loopback"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1", "loopback: 127.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1", "loopback: 127.0.0.1"),
        ("::ffff:7f00:1", "::ffff:7f00:1", "loopback: 127.0.0.1"),
        ("::127.0.0.1", "::7f00:1", "loopback: 127.0.0.1"),  # IPv4-compatible
        ("64:ff9b::a00:1", "64:ff9b::a00:1", "private: 10.0.0.1"),  # NAT64
        ("2002:7f00:1::", "2002:7f00:1::", "loopback: 127.0.0.1"),  # 6to4
        ("::1", "::1", "loopback"),
        ("[::1]", "::1", "loopback"),
        ("::", "::", "unspecified"),
        ("169.254.169.254", "169.254.169.254", "link-local"),
        ("[fe80::1]", "fe80::1", "link-local"),
        ("10.1.2.3", "10.1.2.3", "private"),
        ("172.16.0.1", "172.16.0.1", "private"),
        ("192.168.0.1", "192.168.0.1", "private"),
        ("0xc0a80001", "192.168.0.1", "private"),
        ("fd00::1", "fd00::1", "private"),
        ("100.64.0.1", "100.64.0.1", "shared address space"),
        ("224.0.0.1", "224.0.0.1", "multicast"),
        ("[ff02::1]", "ff02::1", "multicast"),
        ("240.0.0.1", "240.0.0.1", "private"),
        ("255.255.255.255", "255.255.255.255", "private"),
        ("192.0.2.1", "192.0.2.1", "private"),  # documentation
    ],
)
def test_every_spelling_of_a_refused_address_is_refused(host, address, why):
    reach = check_host(host, fake)
    assert reach.refused == f"is {address} ({why})", reach
    assert check_host(host.upper(), fake).refused == reach.refused


@pytest.mark.parametrize(
    ("host", "refused"),
    [
        ("vm", "resolves to 127.0.0.1 (loopback)"),
        ("VM.", "resolves to 127.0.0.1 (loopback)"),
        ("rebound.example.com", "resolves to 10.0.0.7 (private)"),
        ("internal.example.com", "resolves to 192.168.1.10 (private)"),
        ("v6only.example.com", "resolves to fd12:3456::1 (private)"),
        ("metadata.example.com", "resolves to 169.254.169.254 (link-local)"),
        ("mapped.example.com", "resolves to ::ffff:7f00:1 (loopback: 127.0.0.1)"),
        ("localhost", "names this node (localhost)"),
        ("localhost.", "names this node (localhost)"),
        ("LocalHost", "names this node (localhost)"),
        ("api.localhost", "names this node (localhost)"),
    ],
)
def test_a_name_is_refused_when_any_address_it_resolves_to_is(host, refused):
    assert check_host(host, fake).refused == refused


@pytest.mark.parametrize(
    "host",
    ["%31%32%37.0.0.1", "127.0.0.1%00", "ｌｏｃａｌｈｏｓｔ", "127.0.0.1 ", "a b", "-oProxyCommand=x", "[::1", "[127.0.0.1]", "::zz", "a..b"],
)
def test_a_host_that_is_not_a_plain_name_or_address_is_refused(host):
    assert check_host(host, fake).refused.startswith("is not a plain host name or address")


def test_public_hosts_pass_with_every_address_checked():
    assert check_host("git.example.com", fake).addresses == ("140.82.112.3", "2606:50c0:8000::153")
    assert check_host("Git.Example.COM.", fake).refused is None
    for host in ("140.82.112.3", "[2606:50c0:8000::153]", "::ffff:140.82.112.3", "2002:8c52:7003::1"):
        reach = check_host(host, fake)
        assert reach.refused is None and reach.addresses, host


def test_a_name_that_does_not_resolve_is_not_refused_here():
    reach = check_host("nowhere.example.com", fake)
    assert (reach.refused, reach.addresses) == (None, ())
    assert check_host("", fake).refused == "names no host"


def test_literal_addresses_need_no_resolver():
    asked = []
    check_host("127.1", asked.append)
    check_host("[::1]", asked.append)
    assert asked == []


def test_inet_aton_reads_what_the_c_library_reads():
    assert inet_aton("1.2.3.4") == ip_address("1.2.3.4")
    assert inet_aton("1.2.772") == ip_address("1.2.3.4")
    assert inet_aton("1.131844") == ip_address("1.2.3.4")
    assert inet_aton("16909060") == ip_address("1.2.3.4")
    assert inet_aton("0x01.0x02.0x03.0x04") == ip_address("1.2.3.4")
    assert inet_aton("01.02.03.04") == ip_address("1.2.3.4")
    for text in ("1.2.3.4.5", "256.1.1.1", "1.2.3.256", "4294967296", "08", "1..2", "", "0x1g", "1.2.3.-4"):
        assert inet_aton(text) is None, text


def test_why_refused_says_nothing_of_public_addresses():
    for text in ("8.8.8.8", "140.82.112.3", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"):
        assert why_refused(ip_address(text)) is None, text
