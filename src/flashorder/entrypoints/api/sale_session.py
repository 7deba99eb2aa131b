"""The sale page's browser session: a short-lived signed cookie, given for an admin token.

A browser cannot send a bearer header with a page load or an ``EventSource``, so the login
form takes the admin's token once, checks it as any API call would, and answers with a
cookie that says "admin ``sub`` until ``exp``", signed with HMAC-SHA256::

    flashorder_sale=<base64url(sub "|" exp)>.<base64url(hmac)>

The cookie is ``HttpOnly`` (scripts cannot read it), ``SameSite=Strict`` (no other site can
make the browser send it), scoped to ``/sales`` and ``Secure`` when the page is served over
HTTPS. It expires after ``FLASHORDER_SALE_SESSION_SECONDS``; nothing is stored on the server,
so any worker checks it. The signing key is derived from ``FLASHORDER_SALE_SESSION_SECRET``,
or from ``FLASHORDER_JWT_SECRET`` when that is unset; changing the secret ends every session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from flashorder.config import Settings

COOKIE = "flashorder_sale"
PATH = "/sales"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Signs and checks session cookies (no state: any process with the key checks them)."""

    def __init__(self, settings: Settings) -> None:
        secret = settings.sale_session_secret or settings.jwt_secret
        # A key of its own, so a session cookie can never pass for a token or the reverse.
        self._key = hmac.new(
            secret.get_secret_value().encode(), b"flashorder sale page session", hashlib.sha256
        ).digest()
        self.lifetime = settings.sale_session_seconds

    def issue(self, subject: str, *, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.lifetime)
        payload = f"{subject}|{expires}".encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def subject(self, cookie: str, *, now: float | None = None) -> str | None:
        """The admin the cookie names, or None when it is forged, damaged or expired."""
        try:
            payload_text, signature_text = cookie.split(".", 1)
            payload, signature = _unb64(payload_text), _unb64(signature_text)
        except ValueError:
            return None
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        subject, _, expires = payload.decode(errors="replace").rpartition("|")
        if not expires.isdigit() or int(expires) <= (time.time() if now is None else now):
            return None
        return subject or None

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()
