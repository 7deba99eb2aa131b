"""The payment webhook's documented secret is refused where the token one is: beyond
loopback or with a real store, unless the development switch says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flashorder.config import DEV_PAYMENT_WEBHOOK_SECRET, Settings
from flashorder.entrypoints.api.app import create_app
from flashorder.entrypoints.cli import cli

#: A token secret of its own in each case, so that only the webhook's can be the problem.
TOKENS: dict[str, Any] = {"jwt_secret": "t" * 40}
EMBEDDED: dict[str, Any] = {"database_url": None, "redis_url": None, "kafka_bootstrap": None}

EXPOSED = [
    {"host": "0.0.0.0"},
    {"host": "10.1.2.3"},
    {"host": "flashorder.example"},
    {"database_url": "mysql+asyncmy://u:p@db/flashorder"},
    {"redis_url": "redis://cache:6379/0"},
    {"kafka_bootstrap": "kafka:9092"},
]


@pytest.mark.parametrize("exposed", EXPOSED)
def test_the_webhook_development_secret_is_refused_beyond_loopback_or_with_a_real_store(
    exposed: dict[str, Any],
) -> None:
    settings = Settings(**{**EMBEDDED, **TOKENS, **exposed})
    assert settings.payment_webhook_secret.get_secret_value() == DEV_PAYMENT_WEBHOOK_SECRET
    assert settings.dev_secret_problem() is None

    problem = settings.webhook_secret_problem()

    assert problem is not None
    assert "FLASHORDER_PAYMENT_WEBHOOK_SECRET" in problem
    assert "FLASHORDER_ALLOW_DEV_SECRET" in problem
    assert problem in settings.problems()
    allowed = settings.model_copy(update={"allow_dev_secret": True})
    assert allowed.webhook_secret_problem() is None
    assert allowed.problems() == []


@pytest.mark.parametrize(
    "fine",
    [
        {},  # make run: loopback, embedded
        {"host": "localhost"},
        {"host": "::1"},
        {"host": "0.0.0.0", "payment_webhook_secret": "w" * 32},
        {"database_url": "mysql+asyncmy://u:p@db/f", "payment_webhook_secret": "w" * 32},
    ],
)
def test_the_webhook_development_secret_is_fine_on_loopback_and_any_other_secret_anywhere(
    fine: dict[str, Any],
) -> None:
    settings = Settings(**{**EMBEDDED, **TOKENS, **fine})

    assert settings.webhook_secret_problem() is None


def test_serve_refuses_the_webhook_development_secret_beyond_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP", "ALLOW_DEV_SECRET"):
        monkeypatch.delenv(f"FLASHORDER_{name}", raising=False)
    monkeypatch.delenv("FLASHORDER_PAYMENT_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("FLASHORDER_JWT_SECRET", "t" * 40)
    # ``serve`` exports its options for its worker processes: undone after the test.
    monkeypatch.setenv("FLASHORDER_HOST", "127.0.0.1")
    served: list[object] = []
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: served.append(a))

    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"])

    assert result.exit_code == 2, result.output
    assert "FLASHORDER_PAYMENT_WEBHOOK_SECRET" in result.output
    assert served == []


async def test_the_app_refuses_to_start_with_the_webhook_development_secret_and_a_real_store(
    tmp_path: Path,
) -> None:
    settings = Settings(
        **{**EMBEDDED, **TOKENS, "database_url": "mysql+asyncmy://u:p@127.0.0.1:1/none"},
        data_dir=tmp_path,
    )
    app = create_app(settings)

    with pytest.raises(RuntimeError, match="FLASHORDER_PAYMENT_WEBHOOK_SECRET"):
        async with app.router.lifespan_context(app):
            pass


def test_the_webhook_secret_can_come_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "webhook").write_text("w" * 40 + "\n")
    settings = Settings(
        **{**EMBEDDED, **TOKENS}, host="0.0.0.0", payment_webhook_secret_file=tmp_path / "webhook"
    )

    assert settings.payment_webhook_secret.get_secret_value() == "w" * 40
    assert settings.webhook_secret_problem() is None
    # A secret given directly wins over the file; a file too short is refused.
    given = Settings(payment_webhook_secret="g" * 20, payment_webhook_secret_file=tmp_path / "x")
    assert given.payment_webhook_secret.get_secret_value() == "g" * 20
    (tmp_path / "short").write_text("short")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Settings(payment_webhook_secret_file=tmp_path / "short")
