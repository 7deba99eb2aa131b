"""The fast HMAC check accepts only tokens that PyJWT accepts, with the same claims, and it
does accept the tokens a buyer really sends."""

from __future__ import annotations

import base64
import hmac
import json
import re
import time
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flashorder.config import Settings
from flashorder.entrypoints.api.auth import _hmac_tokens
from flashorder.entrypoints.api.hmac_tokens import HmacTokens

SECRET = b"a-secret-of-the-test-that-is-long-enough-for-hs512-keys-64-bytes!!"
OTHER = b"another-secret-of-the-test-that-is-long-enough-for-hs512-keys-64!"
ISSUER, AUDIENCE, LEEWAY = "flashorder", "flashorder-api", 10.0
ACCEPTED_ALGS = ("HS256", "HS384", "HS512")

TOKENS = HmacTokens(
    SECRET, algorithms=ACCEPTED_ALGS, issuer=ISSUER, audience=AUDIENCE, leeway=LEEWAY
)


def pyjwt_claims(token: str) -> dict[str, Any] | None:
    """What the service's PyJWT path accepts (``Authenticator._verify``), or None."""
    try:
        alg = jwt.get_unverified_header(token).get("alg")
        if not isinstance(alg, str) or alg not in ACCEPTED_ALGS:
            return None
        claims: dict[str, Any] = jwt.decode(
            token,
            SECRET,
            algorithms=[alg],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=LEEWAY,
            options={"require": ["exp", "sub", "iss", "aud"]},
        )
    except Exception:
        return None
    return claims


def dumps(value: Any) -> bytes:
    # The standard encoder: it also writes the integers past 64 bits that tokens may hold.
    return json.dumps(value).encode()


def b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def signed(header: bytes, payload: bytes, key: bytes, alg: str) -> str:
    digest = {"HS384": "sha384", "HS512": "sha512"}.get(alg, "sha256")
    signing_input = b64(header) + b"." + b64(payload)
    signature = hmac.new(key, signing_input, digest).digest()
    return (signing_input + b"." + b64(signature)).decode()


class In:
    """A time ``seconds`` from when the claims are made (tests build their tokens when they
    run: a suite can run for longer than any lifetime written at import)."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds


def valid_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": "alice",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": In(600),
        "iat": In(-5),
    }
    claims.update(changes)
    now = int(time.time())
    return {
        k: now + v.seconds if isinstance(v, In) else v
        for k, v in claims.items()
        if v is not _ABSENT
    }


_ABSENT = object()


@pytest.mark.parametrize("alg", ACCEPTED_ALGS)
def test_a_buyers_token_is_accepted_with_pyjwts_claims(alg: str) -> None:
    claims = valid_claims()
    token = jwt.encode(claims, SECRET.decode(), algorithm=alg)
    assert TOKENS.claims(token) == pyjwt_claims(token) == claims


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": ["other", AUDIENCE]},
        {"iat": _ABSENT, "nbf": In(-60), "jti": "j-1", "roles": ["admin"]},
    ],
)
def test_the_usual_variations_are_accepted_too(changes: dict[str, Any]) -> None:
    claims = valid_claims(**changes)
    token = jwt.encode(claims, SECRET.decode(), algorithm="HS256", headers={"kid": "k1"})
    assert TOKENS.claims(token) == pyjwt_claims(token) == claims


@pytest.mark.parametrize(
    ("what", "changes", "key", "alg"),
    [
        ("another key", {}, OTHER.decode(), "HS256"),
        ("expired", {"exp": In(-60)}, SECRET.decode(), "HS256"),
        ("not yet valid", {"nbf": In(60)}, SECRET.decode(), "HS256"),
        ("foreign audience", {"aud": "other"}, SECRET.decode(), "HS256"),
        ("foreign issuer", {"iss": "other"}, SECRET.decode(), "HS256"),
        ("no subject", {"sub": _ABSENT}, SECRET.decode(), "HS256"),
        ("alg none", {}, "", "none"),
    ],
)
def test_bad_tokens_are_left_to_pyjwt_which_refuses_them(
    what: str, changes: dict[str, Any], key: str, alg: str
) -> None:
    token = jwt.encode(valid_claims(**changes), key, algorithm=alg)
    assert TOKENS.claims(token) is None, what
    assert pyjwt_claims(token) is None, what


# Times far from every boundary (leeway 10 s), so that the two checks' clocks cannot differ,
# taken from the clock when each token is made.
_TIMES = st.sampled_from([-3600, -30, 30, 3600]).map(lambda s: int(time.time()) + s)
_ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
    st.text(max_size=12),
    st.lists(st.text(max_size=4), max_size=2),
    st.integers(min_value=-(2**70), max_value=2**70),
)
_CLAIM_VALUES = {
    "exp": st.one_of(_TIMES, _TIMES.map(str), _TIMES.map(float), _ODD),
    "iat": st.one_of(_TIMES, _TIMES.map(float), _ODD),
    "nbf": st.one_of(_TIMES, _TIMES.map(str), _ODD),
    "iss": st.one_of(st.just(ISSUER), st.just("other"), _ODD),
    "aud": st.one_of(
        st.just(AUDIENCE),
        st.just([AUDIENCE, "x"]),
        st.just([AUDIENCE, 1]),
        st.just([]),
        st.just("other"),
        _ODD,
    ),
    "sub": st.one_of(st.just("alice"), _ODD),
    "jti": st.one_of(st.just("j"), _ODD),
}


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    claims: dict[str, Any] = {}
    for name, values in _CLAIM_VALUES.items():
        usual = {
            "exp": int(time.time()) + 3600,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice",
        }.get(name)
        choice = draw(st.sampled_from(["usual"] * 6 + ["odd", "absent"]))
        if choice == "usual" and usual is not None:
            claims[name] = usual
        elif choice == "odd":
            claims[name] = draw(values)
    form = draw(st.sampled_from(["object"] * 5 + ["duplicate", "list", "null", "nan", "junk"]))
    if form == "object":
        return dumps(claims)
    if form == "duplicate":
        return dumps(claims)[:-1] + b',"sub":"mallory"}' if claims else b'{"sub":1}'
    if form == "list":
        return dumps([claims])
    if form == "nan":
        return b'{"exp": NaN, "sub": "alice"}'
    return b"null" if form == "null" else b"{not json"


@st.composite
def headers(draw: st.DrawFn) -> tuple[bytes, str]:
    alg = draw(st.sampled_from([*ACCEPTED_ALGS, "RS256", "none", "hs256", "HS1"]))
    header: dict[str, Any] = {"alg": alg}
    if draw(st.booleans()):
        header["typ"] = draw(st.one_of(st.just("JWT"), _ODD))
    if draw(st.booleans()):
        header["kid"] = draw(st.one_of(st.just("k1"), _ODD))
    extra = draw(st.sampled_from([None] * 5 + ["crit", "b64", "jku", "alg-list"]))
    if extra == "crit":
        header["crit"] = ["exp"]
    elif extra == "b64":
        header.update(b64=False, crit=["b64"])
    elif extra == "jku":
        header["jku"] = "https://example.invalid/keys"
    elif extra == "alg-list":
        header["alg"] = [alg]
    return dumps(header), alg


def mutated(token: str, how: str) -> str:
    head, _, signature = token.rpartition(".")
    return {
        "none": token,
        "padded": token + "=",
        "flipped": head + "." + ("A" if signature[:1] != "A" else "B") + signature[1:],
        "dotted": head + "..",
        "spaced": " " + token,
        "newline": token + "\n",
        "cut": token[:-1],
        "non-ascii": token + "é",
    }[how]


def plain(token: str) -> bool:
    """The form the fast check is for (its module's list): what it must accept when PyJWT
    does."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token):
        return False
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    aud = claims["aud"]
    return (
        header.keys() <= {"alg", "typ", "kid"}
        and all(type(claims[t]) is int for t in ("exp", "iat", "nbf") if t in claims)
        and (type(aud) is str or all(type(a) is str for a in aud))
    )


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers(),
    payloads(),
    st.sampled_from([SECRET, SECRET, SECRET, OTHER]),
    st.sampled_from(["none"] * 8 + ["padded", "flipped", "dotted", "spaced", "newline"])
    | st.sampled_from(["cut", "non-ascii"]),
)
def test_the_fast_check_accepts_what_pyjwt_accepts_in_plain_form_and_nothing_else(
    header: tuple[bytes, str], payload: bytes, key: bytes, how: str
) -> None:
    raw_header, alg = header
    token = mutated(signed(raw_header, payload, key, alg), how)
    fast = TOKENS.claims(token)
    reference = pyjwt_claims(token)
    if fast is not None:
        assert reference == fast
    elif reference is not None:
        assert not plain(token), "a plain token PyJWT accepts was left to PyJWT"


def test_a_secret_pyjwt_refuses_as_an_hmac_key_gets_no_fast_check() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\n" + "A" * 64 + "\n-----END PUBLIC KEY-----"
    usual = Settings(jwt_secret=SECRET.decode())
    assert _hmac_tokens(usual, frozenset({"HS256"})) is not None
    assert _hmac_tokens(usual, frozenset({"RS256"})) is None
    assert _hmac_tokens(Settings(jwt_secret=pem), frozenset({"HS256"})) is None
