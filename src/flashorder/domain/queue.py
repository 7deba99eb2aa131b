"""The waiting room of a queued sale: tickets, the draw at the start, admission tokens.

A buyer holds one ticket per sale. Tickets taken before the sale's start are put in a random
order at the start; later ones follow in arrival order. The random order is a *draw*: each
early ticket's place is ``draw_score(seed, userId)``, the first 52 bits of
``SHA-1(seed ":" userId)``, smallest first (ties by ticket id). The seed is drawn per sale
when its first buyer joins, kept secret until the start and readable by an admin, so anyone
given the seed and the list of early buyers can re-derive the order. Joining early gives
nothing: the score does not depend on the time, and leaving and joining again gives the
same score. Late tickets score ``LATE + n`` (n counts late arrivals), behind every early one.

An admitted ticket gets an admission token, a signed ``(product, user, ticket, until)`` that
the order call checks without any I/O (``verify_admission``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum

from flashorder.domain import errors

#: Scores of tickets taken after the start begin here: above every draw score (< 2**52), and
#: a double (Redis' sorted-set score) holds each integer below 2**53 exactly.
LATE = 2**52


class TicketStatus(StrEnum):
    """WAITING → ADMITTED → ORDERED | EXPIRED; WAITING | ADMITTED → LEFT.

    SOLD_OUT is what a waiting ticket says while no unit is available: it goes back to
    WAITING if units come back (an unpaid hold expires, an order is cancelled)."""

    WAITING = "WAITING"
    ADMITTED = "ADMITTED"
    SOLD_OUT = "SOLD_OUT"
    LEFT = "LEFT"
    #: Admitted, and the token's life passed without an order: the turn went to the next.
    EXPIRED = "EXPIRED"
    #: Admitted, and ordered.
    ORDERED = "ORDERED"


def draw_score(seed: str, user_id: str) -> int:
    """The place of an early ticket in the draw (smaller first)."""
    return int(hashlib.sha1(f"{seed}:{user_id}".encode()).hexdigest()[:13], 16)


@dataclass(frozen=True, slots=True)
class Ticket:
    """One buyer's place in one sale's queue, as the store knows it.

    ``position`` (1-based, stable once drawn) and ``ahead`` (tickets still to be admitted
    before this one; leavers among them are counted until the line passes them, so it is
    an upper bound) are None before the draw."""

    ticket_id: str
    product_id: str
    user_id: str
    status: TicketStatus
    position: int | None
    ahead: int | None
    #: When an admitted ticket's turn ends (ms since the epoch); None unless admitted.
    admitted_until_ms: int | None = None


@dataclass(frozen=True, slots=True)
class QueueState:
    """A sale's queue in figures, as one script reads them."""

    drawn: bool
    #: Tickets the line has passed (admitted, or skipped because they had left).
    cursor: int
    #: Tickets ever taken (a buyer who left and joined again counts twice).
    joined: int
    waiting: int
    admitted: int
    #: Admitted tickets whose turn is on (no order seen yet, token alive).
    live: int
    ordered: int
    expired: int
    left: int
    sold_out: bool
    seed: str


@dataclass(frozen=True, slots=True)
class AdmissionTerms:
    """What one admission step is allowed to do (computed by the caller, run by the store)."""

    now_ms: int
    starts_ms: int
    #: Units available now (the stock gate's figure).
    available: int
    #: Admissions per second, or None: no rate, only the window.
    per_second: float | None
    #: At most this many live admissions (None: only the stock bounds them).
    window: int | None
    #: The life of an admission.
    token_ms: int
    #: Units one turn may take (the product's ``maxPerUser``; 1 when unset): the turns on are
    #: at most ``ceil(available / units_per_turn)``, so the last turn may find fewer units
    #: than it may take, and a tail smaller than one turn's still gets a turn.
    units_per_turn: int = 1
    #: The rate's allowance holds at most this much time's worth of admissions: a step that
    #: comes late (the first after the start, a busy host) admits no more than this burst.
    burst_ms: int = 1000


def sign_admission(
    secret: bytes, *, product_id: str, user_id: str, ticket_id: str, until_ms: int
) -> str:
    """The admission token: ``<payload>.<signature>``, both base64url, the payload
    ``product \\n user \\n ticket \\n until``."""
    payload = "\n".join((product_id, user_id, ticket_id, str(until_ms))).encode()
    signature = hmac.digest(secret, payload, "sha256")
    return f"{_b64(payload)}.{_b64(signature)}"


def verify_admission(
    secret: bytes, token: str, *, product_id: str, user_id: str, now_ms: int
) -> None:
    """Accept the token of ``user_id``'s admission to ``product_id``'s sale, or raise
    AdmissionTokenInvalid / AdmissionTokenExpired."""
    encoded, _, signature = token.partition(".")
    try:
        payload = _unb64(encoded)
        given = _unb64(signature)
    except (binascii.Error, ValueError):
        raise errors.AdmissionTokenInvalid(product_id, "the admission token is malformed") from None
    if not hmac.compare_digest(hmac.digest(secret, payload, "sha256"), given):
        raise errors.AdmissionTokenInvalid(product_id, "the admission token is forged")
    product, user, _ticket, until = payload.decode().split("\n")
    if product != product_id:
        raise errors.AdmissionTokenInvalid(product_id, "the admission token is for another product")
    if user != user_id:
        raise errors.AdmissionTokenInvalid(product_id, "the admission token is another user's")
    if int(until) <= now_ms:
        raise errors.AdmissionTokenExpired(product_id)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or len(text) > 2048:
        raise ValueError("empty or too long")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
