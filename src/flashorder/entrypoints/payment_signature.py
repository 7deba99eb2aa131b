"""The payment webhook's signature: HMAC-SHA256 with a shared secret over the timestamp and
the raw body, in one header::

    Flashorder-Signature: t=1733130000,v1=5257a869e7ec…(64 hex digits)

``v1`` is ``hex(HMAC-SHA256(secret, f"{t}.{body}"))``. The receiver recomputes it and
compares in constant time; any ``v1`` of the header may match (a provider rotating its
secret signs with both for a while). The timestamp is inside the signed text, so a captured
request cannot be replayed with a fresh one; it is refused once older (or newer) than the
tolerance. Replays within the tolerance are harmless: an event id counts once.

Standard library only: the ``flashorder pay`` command imports it and must start quickly.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "Flashorder-Signature"


class SignatureError(Exception):
    """The signature is missing, malformed, wrong, or its timestamp is out of tolerance."""


def sign(secret: str, body: bytes, *, at: int | None = None) -> str:
    """The header value for ``body``, stamped ``at`` (Unix seconds; now by default)."""
    stamp = int(time.time()) if at is None else at
    return f"t={stamp},v1={_digest(secret, stamp, body)}"


def verify(
    secret: str, header: str | None, body: bytes, *, tolerance: float, now: float | None = None
) -> None:
    """Raise SignatureError unless ``header`` signs ``body`` with ``secret`` within
    ``tolerance`` seconds of ``now``."""
    if not header:
        raise SignatureError(f"no {HEADER} header")
    stamp: int | None = None
    given: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit() and len(value) <= 12:
            stamp = int(value)
        elif name == "v1":
            given.append(value)
    if stamp is None or not given:
        raise SignatureError(f"{HEADER} needs t=<unix seconds> and v1=<hex digest>")
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance:
        raise SignatureError("the signature's timestamp is outside the tolerance")
    expected = _digest(secret, stamp, body)
    # Every candidate is compared, in constant time: no early exit tells which one was close.
    matched = False
    for candidate in given:
        matched |= hmac.compare_digest(candidate.encode(), expected.encode())
    if not matched:
        raise SignatureError("the signature does not match")


def _digest(secret: str, stamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
