"""The payment webhook's signature scheme."""

from __future__ import annotations

import pytest

from flashorder.entrypoints.payment_signature import SignatureError, sign, verify

SECRET = "whsec_test_secret_for_signatures"
BODY = b'{"eventId":"evt_1","orderId":"o","amount":100,"status":"succeeded"}'
T = 1_800_000_000


def test_a_signature_made_with_the_secret_verifies() -> None:
    verify(SECRET, sign(SECRET, BODY, at=T), BODY, tolerance=300, now=T + 299)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "v1=abc",
        f"t={T}",
        f"t=abc,v1={'0' * 64}",
        f"t={T},v1={'0' * 64}",
        sign("another_secret_of_some_length", BODY, at=T),
    ],
    ids=["none", "empty", "no-time", "no-digest", "bad-time", "wrong-digest", "other-secret"],
)
def test_a_missing_or_wrong_signature_is_refused(header: str | None) -> None:
    with pytest.raises(SignatureError):
        verify(SECRET, header, BODY, tolerance=300, now=T)


def test_a_changed_body_is_refused() -> None:
    with pytest.raises(SignatureError):
        verify(SECRET, sign(SECRET, BODY, at=T), BODY.replace(b"100", b"1"), tolerance=300, now=T)


@pytest.mark.parametrize("skew", [-301, 301])
def test_a_timestamp_outside_the_tolerance_is_refused(skew: int) -> None:
    with pytest.raises(SignatureError, match="tolerance"):
        verify(SECRET, sign(SECRET, BODY, at=T), BODY, tolerance=300, now=T + skew)


def test_a_restamped_capture_does_not_verify() -> None:
    captured = sign(SECRET, BODY, at=T)
    digest = captured.split("v1=")[1]
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, f"t={T + 1000},v1={digest}", BODY, tolerance=300, now=T + 1000)


def test_any_of_several_digests_may_match_while_a_secret_rotates() -> None:
    old = sign("the_old_secret_being_rotated", BODY, at=T).split("v1=")[1]
    new = sign(SECRET, BODY, at=T).split("v1=")[1]
    verify(SECRET, f"t={T},v1={old},v1={new}", BODY, tolerance=300, now=T)
