from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner
from uvicorn.supervisors import multiprocess

from flashorder.config import Settings
from flashorder.entrypoints import listening, supervisor
from flashorder.entrypoints.api.app import create_app
from flashorder.entrypoints.cli import cli


def test_the_defaults_break_no_promise() -> None:
    assert Settings(database_url=None, redis_url=None, kafka_bootstrap=None).problems() == []


def test_an_idempotency_lease_shorter_than_the_request_deadline_is_refused() -> None:
    settings = Settings(idempotency_lease_seconds=5, request_timeout_seconds=15)
    assert any("IDEMPOTENCY_LEASE" in problem for problem in settings.problems())


def test_several_workers_need_the_shared_services() -> None:
    problems = Settings(
        workers=2, database_url=None, redis_url=None, kafka_bootstrap=None
    ).problems()
    assert len(problems) == 3


def test_a_quantity_limit_that_could_overflow_an_orders_totals_is_refused() -> None:
    # 50 items of 10**6 units at a price of 10**12 is 5 * 10**19: past a BIGINT.
    with pytest.raises(ValueError, match="MAX_QUANTITY_PER_ITEM"):
        Settings(max_items_per_order=50, max_quantity_per_item=1_000_000)
    with pytest.raises(ValueError, match="less than or equal"):
        Settings(max_quantity_per_item=10**9)
    assert Settings(max_items_per_order=1, max_quantity_per_item=1_000_000).max_items_per_order


def test_serve_refuses_to_listen_beyond_loopback_with_the_development_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP", "JWT_SECRET", "ALLOW_DEV_SECRET"):
        monkeypatch.delenv(f"FLASHORDER_{name}", raising=False)
    # ``serve`` exports its options for its worker processes: undone after the test.
    monkeypatch.setenv("FLASHORDER_HOST", "127.0.0.1")
    served: list[object] = []
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: served.append(a))

    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"])

    assert result.exit_code == 2, result.output
    assert "development secret" in result.output
    assert served == []


async def test_the_app_refuses_to_start_with_the_development_secret_and_a_real_store(
    tmp_path: Path,
) -> None:
    settings = Settings(
        database_url="mysql+asyncmy://u:p@127.0.0.1:1/none", redis_url=None, data_dir=tmp_path
    )
    app = create_app(settings)

    with pytest.raises(RuntimeError, match="development secret"):
        async with app.router.lifespan_context(app):
            pass


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([], None, "127.0.0.1"),
        ([], "10.0.0.0/8", "10.0.0.0/8"),
        (["--forwarded-allow-ips", "10.1.2.3,10.1.2.4"], None, "10.1.2.3,10.1.2.4"),
    ],
)
def test_the_trusted_proxies_are_a_setting_passed_to_the_server(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: str | None, expected: str
) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP", "FORWARDED_ALLOW_IPS"):
        monkeypatch.delenv(f"FLASHORDER_{name}", raising=False)
    if env is not None:
        monkeypatch.setenv("FLASHORDER_FORWARDED_ALLOW_IPS", env)
    else:
        # ``serve`` exports its options for its worker processes: undone after the test.
        monkeypatch.setenv("FLASHORDER_FORWARDED_ALLOW_IPS", "127.0.0.1")
    monkeypatch.setenv("FLASHORDER_HOST", "127.0.0.1")
    monkeypatch.setattr("flashorder.entrypoints.cli._prepare", lambda settings: None)
    served: list[dict[str, object]] = []
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: served.append(k))

    result = CliRunner().invoke(cli, ["serve", *args])

    assert result.exit_code == 0, result.output
    assert served[0]["forwarded_allow_ips"] == expected
    assert served[0]["proxy_headers"] is True


@pytest.mark.parametrize(("reuse_port", "own_sockets"), [("true", True), ("false", False)])
def test_several_workers_listen_on_a_socket_each_unless_told_otherwise_and_are_supervised(
    monkeypatch: pytest.MonkeyPatch, reuse_port: str, own_sockets: bool
) -> None:
    monkeypatch.setenv("FLASHORDER_DATABASE_URL", "mysql+asyncmy://u:p@127.0.0.1:1/none")
    monkeypatch.setenv("FLASHORDER_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("FLASHORDER_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("FLASHORDER_ALLOW_DEV_SECRET", "1")
    monkeypatch.setenv("FLASHORDER_REUSE_PORT", reuse_port)
    # ``serve`` exports its options for its worker processes: undone after the test.
    for name in ("HOST", "PORT", "WORKERS"):
        monkeypatch.setenv(f"FLASHORDER_{name}", "0")
    monkeypatch.setattr("flashorder.entrypoints.cli._prepare", lambda settings: None)
    supervised: list[list[object]] = []
    served: list[dict[str, object]] = []

    class Supervisor:
        def __init__(self, config: object, *, sockets: list[object]) -> None:
            supervised.append(sockets)

        def run(self) -> None:
            for sock in supervised[-1]:
                assert isinstance(sock, socket.socket)
                sock.close()

    # ``supervise`` swaps uvicorn's worker class: undone after the test.
    monkeypatch.setattr("uvicorn.supervisors.multiprocess.Process", multiprocess.Process)
    monkeypatch.setattr("uvicorn.supervisors.multiprocess.Multiprocess", Supervisor)
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: served.append(k))

    result = CliRunner().invoke(
        cli, ["serve", "--host", "127.0.0.1", "--port", "0", "--workers", "2"]
    )

    assert result.exit_code == 0, result.output
    ((sock,),) = supervised
    assert isinstance(sock, listening.ReusePortSocket) is own_sockets
    assert served == []
    assert multiprocess.Process is supervisor.Worker
