"""Public-key pins: SHA-256 of a certificate's SubjectPublicKeyInfo (docs/protocol.md#tls).

The pin names a key, not a certificate, so a certificate renewed with the same key keeps its
pin. Pure and standard library only: the dashboard computes a pin per TLS sync (this DER walk
and hash: 2 us; `cryptography`'s parse: 8 us, after a 40 ms import) and the worker's
`vectis sync` reports its own without importing `cryptography`.
"""

from __future__ import annotations

import base64
import hashlib
import re

PIN_PATTERN = "^[0-9a-f]{64}$"
_PIN = re.compile(PIN_PATTERN)
_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----"
)


class BadCertificate(ValueError):
    """Bytes that are not a DER X.509 certificate this walk can read."""


def _element(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the element) of the DER element at `pos`."""
    if pos + 2 > len(der):
        raise BadCertificate("truncated")
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        size = length & 0x7F
        if not 1 <= size <= 4 or pos + size > len(der):
            raise BadCertificate("bad length")
        length = int.from_bytes(der[pos : pos + size], "big")
        pos += size
    end = pos + length
    if end > len(der):
        raise BadCertificate("truncated")
    return tag, pos, end


def spki(der: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a DER certificate (RFC 5280, 4.1)."""
    tag, start, _ = _element(der, 0)  # Certificate
    if tag != 0x30:
        raise BadCertificate("not a certificate")
    tag, pos, _ = _element(der, start)  # tbsCertificate
    if tag != 0x30:
        raise BadCertificate("not a certificate")
    tag, _, end = _element(der, pos)
    if tag == 0xA0:  # [0] version
        pos = end
    for _ in range(5):  # serialNumber, signature, issuer, validity, subject
        _, _, pos = _element(der, pos)
    tag, _, end = _element(der, pos)
    if tag != 0x30:
        raise BadCertificate("no subjectPublicKeyInfo")
    return der[pos:end]


def pin_of_der(der: bytes) -> str:
    """The pin of a DER certificate: SHA-256 of its SubjectPublicKeyInfo, lowercase hex."""
    return hashlib.sha256(spki(der)).hexdigest()


def pem_certificate(pem: bytes) -> bytes:
    """The DER bytes of the first certificate in a PEM document (a key may sit beside it)."""
    found = _PEM_CERT.search(pem)
    if found is None:
        raise BadCertificate("no certificate in the PEM document")
    try:
        return base64.b64decode(b"".join(found.group(1).split()), validate=True)
    except ValueError:
        raise BadCertificate("the certificate is not valid base64") from None


def pin_of_pem(pem: bytes) -> str:
    """The pin of the first certificate in a PEM document."""
    return pin_of_der(pem_certificate(pem))


def is_pin(text: object) -> bool:
    """Whether `text` is a pin: 64 lowercase hex characters."""
    return isinstance(text, str) and _PIN.fullmatch(text) is not None
