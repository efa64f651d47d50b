"""The one address rule every side applies (docs/protocol.md#worker-addresses)."""

from __future__ import annotations

import pytest

from vectis.addresses import unicast


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("203.0.113.5", "203.0.113.5"),
        ("10.0.0.1", "10.0.0.1"),
        ("127.0.0.2", "127.0.0.2"),
        ("2001:DB8::13", "2001:db8::13"),
        ("::1", "::1"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
    ],
)
def test_unicast_accepted_in_canonical_form(text: str, canonical: str) -> None:
    assert str(unicast(text)) == canonical


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("fe80::1%eth0", "zone index"),
        ("999.1.1.1", "not an IP address"),
        (" 10.0.0.1", "not an IP address"),
        ("x" * 100, "not an IP address"),
    ],
)
def test_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        unicast(text)
