"""A dashboard with bad DNS settings refuses to start: one line, exit 3 (a configuration error)."""

from __future__ import annotations

import pytest

from tests.support import run_cli


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--dns-backend", "bogus"], "unknown DNS backend"),
        (["--dns-backend", "route53"], "VECTIS_ROUTE53_ZONE_ID"),
        (["--dns-backend", "rfc2136"], "VECTIS_RFC2136_SERVER"),
    ],
)
def test_bad_dns_settings_are_configuration_errors(args: list[str], named: str) -> None:
    done = run_cli(["dashboard", "serve", "--zone", "fleet.test", "--port", "0", *args])
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""
