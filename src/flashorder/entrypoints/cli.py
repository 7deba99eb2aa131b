"""The ``flashorder`` command.

Each command imports what it uses when it runs: ``flashorder --help`` and ``flashorder token``
load neither the web framework nor the database or broker clients (a test holds this).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from flashorder.config import Settings

cli = typer.Typer(
    name="flashorder",
    help="A flash-sale order service that never oversells.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help and errors: rich's console would cost more to load than a command runs.
    rich_markup_mode=None,
)


def _settings(**overrides: object) -> Settings:
    """Settings from the environment; a command-line value wins and is exported, so that
    worker processes started by uvicorn read the same settings."""
    from flashorder.config import Settings
    from flashorder.entrypoints import logs

    for name, value in overrides.items():
        if value is not None:
            os.environ[f"FLASHORDER_{name.upper()}"] = str(value)
    settings = Settings()
    logs.configure(settings.log_level, json=settings.log_json)
    return settings


def _prepare(settings: Settings, *, worker: bool = False, topics: bool = True) -> None:
    """Everything a process needs before it serves: the data folder, the schema, topics.

    A ``worker`` waits for a database or broker that cannot be reached yet (``startup``);
    the others fail at once."""
    import asyncio

    from flashorder.adapters.sql.migrate import migrate
    from flashorder.entrypoints.startup import waiting_out_outages

    def run(step: Callable[[], object], what: str) -> None:
        if worker:
            waiting_out_outages(step, what=what)
        else:
            step()

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    run(lambda: migrate(settings.effective_database_url), "migrate")
    if topics and settings.kafka_bootstrap is not None:
        from flashorder.adapters.events.topics import ensure_topics

        bootstrap = settings.kafka_bootstrap
        run(
            lambda: asyncio.run(
                ensure_topics(
                    bootstrap,
                    partitions=settings.kafka_partitions,
                    replication=settings.kafka_replication,
                    prefix=settings.kafka_topic_prefix,
                )
            ),
            "topics",
        )


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on")] = None,
    workers: Annotated[int | None, typer.Option(help="API worker processes")] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(help="Proxies whose X-Forwarded-For is believed (comma-separated, or *)"),
    ] = None,
) -> None:
    """Serve the API (embedded by default; see FLASHORDER_* settings for the full stack)."""
    import shutil

    import uvicorn

    settings = _settings(
        host=host, port=port, workers=workers, forwarded_allow_ips=forwarded_allow_ips
    )
    if problems := settings.problems():
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    _prepare(settings)
    if settings.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        folder = Path(settings.data_dir / "prometheus").resolve()
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    mode = "embedded" if settings.embedded else "full stack"
    typer.echo(f"flashorder ({mode}) on http://{settings.host}:{settings.port}  docs: /docs")
    uvicorn.run(
        "flashorder.entrypoints.api.app:serving_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        access_log=False,
        backlog=4096,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=10,
        # The supervisor pings each worker every half second and kills one that does not
        # answer within this. uvicorn's 5 s is shorter than a worker's start (a fresh
        # interpreter importing the app) on a saturated CPU, which a flash sale makes: it
        # killed starting workers again and again, so the API ran a worker short for minutes
        # and a crashed worker was not replaced (found by the worker-kill drill).
        timeout_worker_healthcheck=60,
    )


@cli.command()
def migrate() -> None:
    """Apply the database migrations (also done by serve, relay and projector)."""
    settings = _settings()
    _prepare(settings)
    typer.echo("schema is up to date")


@cli.command()
def relay() -> None:
    """Publish the outbox to Kafka (safe to run several at once)."""
    import uvloop

    from flashorder.entrypoints.workers import relay_main

    settings = _settings()
    if settings.kafka_bootstrap is None:
        typer.echo("error: the relay needs FLASHORDER_KAFKA_BOOTSTRAP", err=True)
        raise typer.Exit(2)
    _prepare(settings, worker=True)
    # uvloop, as the API workers: its transports cost less CPU per message than asyncio's.
    uvloop.run(relay_main(settings))


@cli.command()
def projector() -> None:
    """Build the read model from Kafka (a consumer group; run one or more)."""
    import uvloop

    from flashorder.entrypoints.workers import projector_main

    settings = _settings()
    if settings.kafka_bootstrap is None:
        typer.echo("error: the projector needs FLASHORDER_KAFKA_BOOTSTRAP", err=True)
        raise typer.Exit(2)
    _prepare(settings, worker=True)
    uvloop.run(projector_main(settings))


@cli.command()
def reconcile(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what is out of line; change nothing")
    ] = False,
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than",
            min=0,
            help="Release or confirm reservations pending longer than this many seconds "
            "(default: FLASHORDER_RECONCILE_OLDER_THAN_SECONDS)",
        ),
    ] = None,
) -> None:
    """Repair drift between the Redis stock gate and the database; print what changed."""
    import asyncio

    import orjson

    from flashorder.application.reconcile import reconcile as run
    from flashorder.bootstrap import build
    from flashorder.domain.errors import Unavailable

    settings = _settings()
    if settings.redis_url is None:
        typer.echo(
            "error: reconcile repairs the shared gate: set FLASHORDER_REDIS_URL "
            "(an embedded server reconciles its own gate periodically)",
            err=True,
        )
        raise typer.Exit(2)
    age = settings.reconcile_older_than_seconds if older_than is None else older_than

    async def main() -> dict[str, object]:
        async with build(settings, background=False) as service:
            assert service.gate is not None
            report = await run(
                uow=service.deps.uow,
                stock=service.gate,
                locks=service.deps.locks,
                older_than=age,
                dry_run=dry_run,
            )
        return report.as_dict()

    try:
        report = asyncio.run(main())
    except Unavailable as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


@cli.command()
def token(
    user: Annotated[str, typer.Option(help="The user id (the token's subject)")],
    admin: Annotated[bool, typer.Option(help="Give the token the admin role")] = False,
    ttl: Annotated[int, typer.Option(help="Seconds the token is valid", min=1)] = 3600,
) -> None:
    """Print a bearer token signed with FLASHORDER_JWT_SECRET (development and tests)."""
    from flashorder.config import Settings
    from flashorder.entrypoints.tokens import mint_token

    typer.echo(mint_token(Settings(), user, admin=admin, ttl=ttl))


@cli.command()
def pay(
    order_id: Annotated[str, typer.Argument(help="The order to pay")],
    status: Annotated[
        str, typer.Option(help="succeeded | processing | failed (what the provider reports)")
    ] = "succeeded",
    amount: Annotated[
        int | None, typer.Option(help="The amount paid (default: the order's, read from the API)")
    ] = None,
    event_id: Annotated[
        str | None, typer.Option(help="The provider's event id (default: a new one)")
    ] = None,
    url: Annotated[str, typer.Option(help="The API")] = "http://127.0.0.1:8000",
) -> None:
    """Send the payment webhook for an order, signed with FLASHORDER_PAYMENT_WEBHOOK_SECRET,
    as a payment provider would (development and the README's walk-through)."""
    import json
    import secrets
    import urllib.error
    import urllib.request

    from flashorder.config import Settings
    from flashorder.entrypoints.payment_signature import HEADER, sign
    from flashorder.entrypoints.tokens import mint_token

    if status not in ("succeeded", "processing", "failed"):
        typer.echo("error: --status is succeeded, processing or failed", err=True)
        raise typer.Exit(2)
    settings = Settings()
    base = url.rstrip("/")

    def call(request: urllib.request.Request) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return int(answer.status), answer.read().decode()
        except urllib.error.HTTPError as refused:
            return refused.code, refused.read().decode()
        except urllib.error.URLError as exc:
            typer.echo(f"error: {base}: {exc.reason}", err=True)
            raise typer.Exit(1) from None

    if amount is None:
        token = mint_token(settings, "payments", admin=True, ttl=60)
        code, text = call(
            urllib.request.Request(
                f"{base}/api/v1/orders/{order_id}", headers={"Authorization": f"Bearer {token}"}
            )
        )
        if code != 200:
            typer.echo(f"error: reading the order answered {code}: {text}", err=True)
            raise typer.Exit(1)
        amount = int(json.loads(text)["paymentAmount"])
    body = json.dumps(
        {
            "eventId": event_id or f"evt_{secrets.token_hex(12)}",
            "orderId": order_id,
            "amount": amount,
            "status": status,
        }
    ).encode()
    signature = sign(settings.payment_webhook_secret.get_secret_value(), body)
    code, text = call(
        urllib.request.Request(
            f"{base}/api/v1/payments/events",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", HEADER: signature},
        )
    )
    typer.echo(f"{code} {text}")
    if code >= 400:
        raise typer.Exit(1)


@cli.command()
def expirer() -> None:
    """Expire unpaid orders past their deadline and put their units back on sale (safe to
    run several at once; the embedded server runs one inside)."""
    import uvloop

    from flashorder.entrypoints.workers import expirer_main

    settings = _settings()
    if settings.expire_every_seconds <= 0:
        typer.echo("error: FLASHORDER_EXPIRE_EVERY_SECONDS is 0 (expiry off)", err=True)
        raise typer.Exit(2)
    # The expirer publishes nothing itself (its events go through the outbox): no topics.
    _prepare(settings, worker=True, topics=False)
    uvloop.run(expirer_main(settings))


@cli.command()
def openapi() -> None:
    """Print the OpenAPI description that the API serves at /openapi.json with these settings
    (``make openapi`` writes the default one to docs/openapi.json)."""
    import json

    from flashorder.config import Settings
    from flashorder.entrypoints.api.app import create_app

    document = create_app(Settings(), background=False).openapi()
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


def main() -> None:
    cli()
