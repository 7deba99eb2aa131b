"""HMAC-signed bearer tokens (HS256, HS384, HS512) accepted in a few microseconds, in front
of PyJWT.

In a flash sale nearly every buyer is new to the process, so nearly every order's token is
checked in full once: through PyJWT that was a tenth of an API worker's CPU (its generic
path parses the header twice, decodes with the standard ``json`` and walks its option
tables). ``HmacTokens`` checks the plainest form of a token directly:

- three base64url segments without padding, nothing else;
- a header object with an accepted ``HS*`` ``alg``, and nothing but ``typ`` and a string
  ``kid`` beside it (no ``crit``, no ``b64``, no key URLs);
- the signature, compared in constant time;
- a payload object whose ``exp`` (required), ``iat`` and ``nbf`` are plain integers within
  the leeway, whose ``iss`` is the issuer, ``aud`` the audience (or a list of strings that
  holds it), ``sub`` a string and ``jti``, if any, a string.

It only ever *accepts*: a token it does not accept, valid or not, goes to PyJWT, which
decides and words the refusal. So it can answer sooner, never differently: every token it
accepts is one PyJWT accepts with the same claims, which
``tests/unit/test_hmac_tokens.py`` checks on thousands of generated tokens, tampered,
expired and malformed ones among them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Collection
from typing import Any

import orjson

_DIGESTS: dict[str, Callable[..., Any]] = {
    "HS256": hashlib.sha256,
    "HS384": hashlib.sha384,
    "HS512": hashlib.sha512,
}
_PLAIN = re.compile(rb"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
_HEADER_KEYS = frozenset({"alg", "typ", "kid"})
_TIMES = ("iat", "nbf")


class HmacTokens:
    """The claims of a token that passes every check, else None (see the module)."""

    def __init__(
        self,
        secret: bytes,
        *,
        algorithms: Collection[str],
        issuer: str,
        audience: str,
        leeway: float,
    ) -> None:
        self._digests = {alg: _DIGESTS[alg] for alg in algorithms if alg in _DIGESTS}
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway

    def claims(self, token: str) -> dict[str, Any] | None:
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError:
            return None
        plain = _PLAIN.fullmatch(raw)
        if plain is None:
            return None
        header_segment, payload_segment, signature_segment = plain.groups()
        try:
            header = orjson.loads(_decoded(header_segment))
            if type(header) is not dict or not header.keys() <= _HEADER_KEYS:
                return None
            alg = header.get("alg")
            digest = self._digests.get(alg) if type(alg) is str else None
            if digest is None or type(header.get("kid", "")) is not str:
                return None
            signed = raw[: len(header_segment) + 1 + len(payload_segment)]
            expected = hmac.new(self._secret, signed, digest).digest()
            if not hmac.compare_digest(expected, _decoded(signature_segment)):
                return None
            claims = orjson.loads(_decoded(payload_segment))
        except (binascii.Error, orjson.JSONDecodeError):
            return None
        if type(claims) is not dict or not self._valid(claims):
            return None
        return claims

    def _valid(self, claims: dict[str, Any]) -> bool:
        now = time.time()
        exp = claims.get("exp")
        if type(exp) is not int or exp <= now - self._leeway:
            return False
        for name in _TIMES:
            if name in claims:
                at = claims[name]
                if type(at) is not int or at > now + self._leeway:
                    return False
        aud = claims.get("aud")
        if type(aud) is list:
            if self._audience not in aud or any(type(a) is not str for a in aud):
                return False
        elif type(aud) is not str or aud != self._audience:
            return False
        return (
            type(claims.get("iss")) is str
            and claims["iss"] == self._issuer
            and type(claims.get("sub")) is str
            and type(claims.get("jti", "")) is str
        )


def _decoded(segment: bytes) -> bytes:
    # A segment of one character past a multiple of four is no base64: binascii.Error.
    return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
