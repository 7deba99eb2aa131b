"""The sale page's session cookie: signed, short-lived, bound to its key."""

from __future__ import annotations

from pydantic import SecretStr

from flashorder.config import Settings
from flashorder.entrypoints.api.auth import secret_warning
from flashorder.entrypoints.api.sale_session import Sessions

OTHER_SECRET = SecretStr("another-secret-of-at-least-32-bytes!!")


def test_a_session_names_its_admin_until_it_expires() -> None:
    sessions = Sessions(Settings(sale_session_seconds=60))
    cookie = sessions.issue("ops", now=1000.0)
    assert sessions.subject(cookie, now=1059.0) == "ops"
    assert sessions.subject(cookie, now=1060.0) is None


def test_a_session_signed_with_another_key_or_altered_is_refused() -> None:
    cookie = Sessions(Settings()).issue("ops")
    assert Sessions(Settings(sale_session_secret=OTHER_SECRET)).subject(cookie) is None
    payload, signature = cookie.split(".")
    assert Sessions(Settings()).subject(f"{payload}A.{signature}") is None
    for junk in ("", ".", "abc", "a.b.c", "%%%.%%%"):
        assert Sessions(Settings()).subject(junk) is None


def test_a_deployment_whose_sessions_derive_from_the_public_secret_is_refused() -> None:
    def deployed(session_secret: SecretStr | None = None) -> Settings:
        return Settings(
            database_url="mysql+asyncmy://u:p@db/x",
            jwt_algorithms=["RS256"],
            sale_session_secret=session_secret,
            queue_secret=OTHER_SECRET,
        )

    problem = deployed().sale_session_secret_problem()
    assert problem is not None
    assert "FLASHORDER_SALE_SESSION_SECRET" in problem
    assert problem in deployed().problems()
    assert deployed(OTHER_SECRET).sale_session_secret_problem() is None
    assert secret_warning(deployed(OTHER_SECRET)) is None
