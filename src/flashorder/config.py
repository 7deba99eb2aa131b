"""Settings, read from ``FLASHORDER_*`` environment variables by an entrypoint, once.

With none set, the service runs embedded: SQLite under ``FLASHORDER_DATA_DIR`` and in-process
twins of Redis and Kafka. Each URL that is set switches its part to the real service.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The development secret: documented, hence public. A service that accepts HS* tokens with it
#: refuses to start when it listens beyond loopback or uses a real store (``dev_secret_problem``),
#: unless ``FLASHORDER_ALLOW_DEV_SECRET`` says that this is development.
DEV_JWT_SECRET = "flashorder-development-secret-change-me"
#: The payment webhook's development secret: as public as the one above, and refused on the
#: same terms (``webhook_secret_problem``): with it anyone can mark orders paid.
DEV_PAYMENT_WEBHOOK_SECRET = "flashorder-payments-development-secret"

#: The wire's bound on any amount of money (a price, a fee): see ``schemas.Amount``.
LARGEST_AMOUNT = 10**12
#: The largest value of the totals' columns (SQL BIGINT) and of SQLite's integers.
_BIGINT_MAX = 2**63 - 1


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLASHORDER_", extra="ignore")

    #: ``mysql+asyncmy://user:pass@host:3306/db``; unset → SQLite in ``data_dir``.
    database_url: str | None = None
    #: ``redis://host:6379/0``, or ``redis+cluster://host:port[,host:port…]`` for a Redis
    #: Cluster (any reachable nodes; the client learns the rest); unset → in-process stock
    #: gate, locks and idempotency cache.
    redis_url: str | None = None
    #: ``host:9092[,host:9092]``; unset → in-process event delivery (relay and projector run
    #: inside the API process).
    kafka_bootstrap: str | None = None
    data_dir: Path = Path(".data")

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(default=1, ge=1, le=64)
    #: With several workers, each listens on a socket of its own (``SO_REUSEPORT``) and the
    #: kernel spreads the connections evenly; off: they share one socket, and one accept
    #: queue, as uvicorn does by default (see ``entrypoints/listening.py``).
    reuse_port: bool = True
    log_level: str = "info"
    log_json: bool = False

    #: ``reserve``: atomic reservation in the gate, then one guarded transaction (default).
    #: ``lock``: the original design, a per-product lock around ``SELECT … FOR UPDATE``.
    strategy: Literal["reserve", "lock"] = "reserve"

    #: Orders of concurrent requests share one transaction (one fsync, one stock update per
    #: product). Off: one transaction per order.
    group_commit: bool = True
    group_commit_max_batch: int = Field(default=500, ge=1, le=10_000)
    database_pool_size: int = Field(default=20, ge=1, le=500)
    redis_pool_size: int = Field(default=200, ge=1, le=10_000)
    #: How long a request waits for a per-user lock before it answers 409.
    lock_wait_seconds: float = Field(default=5.0, gt=0, le=60)
    #: The lock's lease; renewed while its holder works, so it only matters if a holder dies.
    lock_lease_seconds: float = Field(default=10.0, gt=0, le=600)
    idempotency_retention_seconds: int = Field(default=86_400, ge=60)
    #: A request whose Idempotency-Key is in flight longer than this is presumed dead.
    idempotency_lease_seconds: int = Field(default=30, ge=1)

    #: A command that takes longer answers 503 (retry it with the same Idempotency-Key).
    request_timeout_seconds: float = Field(default=15.0, gt=0, le=300)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    #: All request headers together (a bearer token is one of them): more is answered 431
    #: before any header is read.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    max_items_per_order: int = Field(default=50, ge=1, le=1000)
    #: Bounded so that no order's totals can overflow a BIGINT (see ``_totals_fit``).
    max_quantity_per_item: int = Field(default=1000, ge=1, le=1_000_000)
    #: What delivery costs: a flat fee per order, free when the items amount after the
    #: discount reaches ``delivery_free_from`` (unset: never free). A product may set a fee
    #: of its own; an order's ``deliveryFee`` is the highest of these (``DeliveryRule``) and
    #: must equal it (422 otherwise, like a tampered price).
    delivery_fee: int = Field(default=0, ge=0, le=LARGEST_AMOUNT)
    delivery_free_from: int | None = Field(default=None, ge=0, le=LARGEST_AMOUNT)

    #: Prepended to every topic name, so that deployments can share a broker.
    kafka_topic_prefix: str = Field(default="", max_length=100, pattern=r"^[A-Za-z0-9._\-]*$")
    kafka_partitions: int = Field(default=6, ge=1)
    kafka_replication: int = Field(default=1, ge=1)
    projector_group: str = "flashorder-projector"
    relay_batch_size: int = Field(default=500, ge=1, le=10_000)
    #: The event path's batching, traded against its lag: after a batch smaller than
    #: ``relay_batch_size`` the relay waits this long before it looks again, and a
    #: projector's fetch waits up to ``projector_fetch_wait_ms`` for 64 KiB of events.
    #: Longer waits mean larger batches, less CPU per event and a longer lag
    #: (docs/benchmarks.md measures both).
    relay_idle_seconds: float = Field(default=0.1, gt=0, le=10)
    projector_fetch_wait_ms: int = Field(default=200, ge=0, le=10_000)
    outbox_retention_hours: int = Field(default=24, ge=1)
    #: Each API process reconciles the stock gate with the database this often (0: never;
    #: ``flashorder reconcile`` does it on demand), releasing reservations left pending
    #: longer than ``reconcile_older_than_seconds`` by a worker that died. That age must
    #: exceed the life of any order transaction that could still commit.
    reconcile_every_seconds: float = Field(default=30.0, ge=0)
    reconcile_older_than_seconds: float = Field(default=120.0, gt=0)

    #: Bearer tokens. HS256 tokens are checked with ``jwt_secret``; RS256/ES256 ones with
    #: ``jwt_public_key`` (PEM) or the keys at ``jwt_jwks_url`` (by ``kid``). The default
    #: secret is public: anyone can mint tokens with it, so never deploy with it.
    #: At least 32 bytes: HS256 with a shorter key is guessable (PyJWT warns about it too).
    jwt_secret: SecretStr = Field(default=SecretStr(DEV_JWT_SECRET), min_length=32)
    #: A file whose content (trimmed) is the secret, used when ``jwt_secret`` is not given:
    #: how compose hands every process the secret its init step generated.
    jwt_secret_file: Path | None = None
    #: Development only: serve with the documented secret although the service listens
    #: beyond loopback or uses a real store. Anyone can then mint admin tokens.
    allow_dev_secret: bool = False
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    #: Accepted ``alg`` values. Unset: HS256, or RS256 and ES256 when a public key or a JWKS
    #: URL is set (then tokens signed with the shared secret are refused unless listed).
    jwt_algorithms: list[str] | None = None
    jwt_issuer: str = "flashorder"
    jwt_audience: str = "flashorder-api"
    #: Clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
    jwt_leeway_seconds: float = Field(default=10.0, ge=0, le=300)
    jwt_jwks_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    jwt_jwks_cache_seconds: float = Field(default=300.0, ge=1)
    #: A verified token is remembered (per process) this long, at most until it expires, so
    #: a buyer's next requests skip the signature check. 0 checks every request. A key
    #: withdrawn from the JWKS stops its tokens within this time. An entry is about 0.4 KB:
    #: 20,000 of them hold about 8 MiB per process.
    jwt_verified_cache_seconds: float = Field(default=60.0, ge=0, le=3600)
    jwt_verified_cache_size: int = Field(default=20_000, ge=1, le=1_000_000)
    #: Which claim makes a token an admin's, and the value it must hold: the claim is equal
    #: to it, or a list containing it, or a space-separated string containing it (OAuth's
    #: ``scope``). A dotted name (``realm_access.roles``) walks nested objects when no claim
    #: has the whole name. ``true`` also matches a JSON ``true``.
    jwt_admin_claim: str = Field(default="roles", min_length=1, max_length=200)
    jwt_admin_value: str = Field(default="admin", min_length=1, max_length=200)

    #: Token buckets for placing and cancelling orders, per user and per client address.
    #: A rate of 0 turns that limit off. The defaults only stop floods: a flash sale's crowd
    #: comes from few addresses (NAT, proxies) and retries with idempotency keys.
    rate_user_per_second: float = Field(default=20.0, ge=0)
    rate_user_burst: int = Field(default=60, ge=1)
    rate_ip_per_second: float = Field(default=5_000.0, ge=0)
    rate_ip_burst: int = Field(default=10_000, ge=1)
    #: The proxies whose ``X-Forwarded-For`` / ``X-Forwarded-Proto`` are believed (uvicorn's
    #: ``--forwarded-allow-ips``): comma-separated addresses or networks, or ``*``. The client
    #: address of the per-address bucket is the connection's peer unless that peer is listed.
    #: Behind a load balancer, list it, or every buyer shares its address's bucket.
    forwarded_allow_ips: str = Field(default="127.0.0.1", min_length=1, max_length=2000)
    #: How old this process's knowledge that a product is sold out may be. Within it, orders
    #: of a sold-out product are refused without touching Redis or the database; an order
    #: that could succeed is refused for at most this long after stock comes back. 0: off.
    sold_out_cache_seconds: float = Field(default=0.1, ge=0, le=10)
    #: At most this many products' readings per process (the oldest go first).
    sold_out_cache_size: int = Field(default=10_000, ge=1, le=1_000_000)

    #: How long a buyer has to pay for an order (products may set their own
    #: ``payWithinSeconds``); unpaid by then, it expires and its units go back on sale.
    pay_within_seconds: int = Field(default=600, ge=1, le=7 * 86_400)
    #: A ``processing`` payment moves the deadline to at least this far ahead, once.
    payment_grace_seconds: int = Field(default=300, ge=0, le=86_400)
    #: The secret the payment provider signs its webhook with (``Flashorder-Signature``).
    #: Refused beyond ``make run`` unless ``allow_dev_secret`` (``webhook_secret_problem``).
    payment_webhook_secret: SecretStr = Field(
        default=SecretStr(DEV_PAYMENT_WEBHOOK_SECRET), min_length=16
    )
    #: A file whose content (trimmed) is that secret, used when it is not given directly
    #: (compose's init step generates one).
    payment_webhook_secret_file: Path | None = None
    #: A webhook whose signed timestamp is further than this from our clock is refused (401).
    payment_webhook_tolerance_seconds: int = Field(default=300, ge=1, le=3600)
    #: How often an expirer looks for unpaid orders past their deadline (0: never). The
    #: embedded server runs one inside; the full stack runs ``flashorder expirer``.
    expire_every_seconds: float = Field(default=1.0, ge=0, le=3600)
    expire_batch_size: int = Field(default=200, ge=1, le=10_000)

    #: Where the relay and the projector processes serve their Prometheus metrics
    #: (``http://host:port/metrics``); unset: not served. The API serves its own at /metrics.
    relay_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    projector_metrics_port: int | None = Field(default=None, ge=1, le=65535)

    #: The live sale page's browser session (``/sales/login``): how long a login lasts, and
    #: the secret its cookie is signed with (unset: derived from ``jwt_secret``; set it when
    #: tokens come from an identity provider and ``jwt_secret`` is left at its default).
    sale_session_seconds: int = Field(default=1800, ge=60, le=86_400)
    sale_session_secret: SecretStr | None = Field(default=None, min_length=32)
    #: How often the sale page's figures are sampled (once per process, whatever the viewers).
    sale_page_sample_seconds: float = Field(default=1.0, ge=0.1, le=60)

    #: The waiting rooms of queued sales (docs/waiting-room.md): how long an admitted buyer
    #: has to order (the admission token's life); at most how many admitted buyers may be
    #: ordering at once when a sale sets no ``admissionPerSecond``; how often each process
    #: runs the admission step of the rooms it serves; the key admission tokens are signed
    #: with (unset: derived from ``jwt_secret``).
    queue_token_seconds: int = Field(default=60, ge=5, le=3600)
    queue_window: int = Field(default=100, ge=1, le=1_000_000)
    queue_tick_seconds: float = Field(default=0.25, gt=0, le=5)
    queue_secret: SecretStr | None = Field(default=None, min_length=32)

    #: Serve ``/api/v1/bench/*``: trivial routes with the orders' validation and no I/O, the
    #: ceiling of the HTTP stack that ``flashorder-bench`` compares the real routes with.
    bench_endpoints: bool = False

    #: ``/readyz`` and ``/metrics`` answer anyone; what they read of the database and Redis
    #: is shared for this long per process, so a flood of them costs one reading a period.
    probe_cache_seconds: float = Field(default=1.0, ge=0, le=60)

    @model_validator(mode="after")
    def _secret_from_file(self) -> Self:
        if self.jwt_secret_file is None or self.jwt_secret.get_secret_value() != DEV_JWT_SECRET:
            return self
        secret = self.jwt_secret_file.read_text().strip()
        if len(secret) < 32:
            raise ValueError(f"{self.jwt_secret_file} must hold a secret of at least 32 bytes")
        self.jwt_secret = SecretStr(secret)
        return self

    @model_validator(mode="after")
    def _webhook_secret_from_file(self) -> Self:
        given = self.payment_webhook_secret.get_secret_value()
        if self.payment_webhook_secret_file is None or given != DEV_PAYMENT_WEBHOOK_SECRET:
            return self
        secret = self.payment_webhook_secret_file.read_text().strip()
        if len(secret) < 16:
            raise ValueError(
                f"{self.payment_webhook_secret_file} must hold a secret of at least 16 bytes"
            )
        self.payment_webhook_secret = SecretStr(secret)
        return self

    @model_validator(mode="after")
    def _totals_fit(self) -> Self:
        # An order's items amount is at most items x quantity x price: it must fit the
        # totals' BIGINT columns, with room for the delivery fee, or an order could answer 500.
        largest = self.max_items_per_order * self.max_quantity_per_item * LARGEST_AMOUNT
        if largest + LARGEST_AMOUNT > _BIGINT_MAX:
            raise ValueError(
                "FLASHORDER_MAX_ITEMS_PER_ORDER x FLASHORDER_MAX_QUANTITY_PER_ITEM is too large: "
                f"at prices up to {LARGEST_AMOUNT} an order's total could exceed {_BIGINT_MAX}"
            )
        return self

    @field_validator("redis_url")
    @classmethod
    def _cluster_nodes_listed(cls, url: str | None) -> str | None:
        listed = r"redis\+cluster://[^,/\s:]+:\d+(,[^,/\s:]+:\d+)*/?"
        if url is not None and url.startswith("redis+cluster://") and not re.fullmatch(listed, url):
            raise ValueError("expected redis+cluster://host:port[,host:port…]")
        return url

    @property
    def redis_cluster_nodes(self) -> list[tuple[str, int]] | None:
        """The nodes of a ``redis+cluster://`` URL; None for one Redis (or none)."""
        scheme = "redis+cluster://"
        if self.redis_url is None or not self.redis_url.startswith(scheme):
            return None
        nodes = self.redis_url.removeprefix(scheme).rstrip("/").split(",")
        return [(host, int(port)) for host, port in (node.rsplit(":", 1) for node in nodes)]

    @property
    def embedded(self) -> bool:
        return self.database_url is None and self.redis_url is None

    @property
    def effective_jwt_algorithms(self) -> list[str]:
        if self.jwt_algorithms is not None:
            return self.jwt_algorithms
        if self.jwt_public_key is not None or self.jwt_jwks_url is not None:
            return ["RS256", "ES256"]
        return ["HS256"]

    @property
    def effective_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'flashorder.db').resolve()}"

    def problems(self) -> list[str]:
        """Settings that would break a promise, as sentences. Empty when all is well."""
        found = []
        if self.idempotency_lease_seconds <= self.request_timeout_seconds:
            found.append(
                "FLASHORDER_IDEMPOTENCY_LEASE_SECONDS must exceed "
                "FLASHORDER_REQUEST_TIMEOUT_SECONDS: a retry could otherwise be answered "
                "before the first request's order commits"
            )
        if self.workers > 1 and self.redis_url is None:
            found.append(
                "several workers need FLASHORDER_REDIS_URL: in-process locks and stock "
                "counts are not shared between processes"
            )
        if self.workers > 1 and self.database_url is None:
            found.append("several workers need FLASHORDER_DATABASE_URL (SQLite is one process)")
        if self.workers > 1 and self.kafka_bootstrap is None:
            found.append(
                "several workers need FLASHORDER_KAFKA_BOOTSTRAP: in-process event delivery "
                "would run one relay per worker"
            )
        found += [
            problem
            for problem in (
                self.dev_secret_problem(),
                self.sale_session_secret_problem(),
                self.queue_secret_problem(),
                self.webhook_secret_problem(),
            )
            if problem is not None
        ]
        return found

    def dev_secret_problem(self) -> str | None:
        """Why serving with these settings would hand out admin rights to anyone, or None.

        The documented secret is fine on a loopback address with embedded stores (``make
        run``); anywhere else it needs the explicit development switch."""
        hs = [alg for alg in self.effective_jwt_algorithms if alg.upper().startswith("HS")]
        if not hs or self.jwt_secret.get_secret_value() != DEV_JWT_SECRET or self.allow_dev_secret:
            return None
        if not (exposed := self._exposure()):
            return None
        return (
            f"FLASHORDER_JWT_SECRET is the documented development secret and {'/'.join(hs)} "
            f"tokens are accepted while the service {', '.join(exposed)}: anyone could mint "
            "admin tokens. Set FLASHORDER_JWT_SECRET to a random secret of at least 32 bytes "
            "(openssl rand -hex 32), or a public key / JWKS URL with FLASHORDER_JWT_ALGORITHMS "
            "leaving out HS*; for development only, FLASHORDER_ALLOW_DEV_SECRET=1."
        )

    def webhook_secret_problem(self) -> str | None:
        """Why serving with these settings would let anyone mark orders paid, or None: the
        payment webhook's documented secret, refused on the same terms as the token one."""
        secret = self.payment_webhook_secret.get_secret_value()
        if secret != DEV_PAYMENT_WEBHOOK_SECRET or self.allow_dev_secret:
            return None
        if not (exposed := self._exposure()):
            return None
        return (
            "FLASHORDER_PAYMENT_WEBHOOK_SECRET is the documented development secret while the "
            f"service {', '.join(exposed)}: anyone could mark orders paid. Set it (or "
            "FLASHORDER_PAYMENT_WEBHOOK_SECRET_FILE) to the secret your payment provider signs "
            "its webhook with; for development only, FLASHORDER_ALLOW_DEV_SECRET=1."
        )

    def sale_session_secret_problem(self) -> str | None:
        """Why the sale page's sessions could be forged by anyone, or None: their key derived
        from the documented token secret (no ``sale_session_secret``) where that secret is
        refused. Tokens checked with a public key leave the secret unused by them, but not by
        the sessions."""
        if not (exposed := self._derived_from_dev_secret(self.sale_session_secret)):
            return None
        return (
            "The sale page's sessions would be signed with a key derived from the documented "
            f"development secret while the service {', '.join(exposed)}: anyone could forge an "
            "admin session of /sales. Set FLASHORDER_SALE_SESSION_SECRET (or "
            "FLASHORDER_JWT_SECRET) to a random secret of at least 32 bytes; for development "
            "only, FLASHORDER_ALLOW_DEV_SECRET=1."
        )

    def queue_secret_problem(self) -> str | None:
        """Why anyone could skip a queued sale's line, or None: the admission tokens' key
        derived from the documented token secret (no ``queue_secret``) where that secret is
        refused, as for the sale page's sessions."""
        if not (exposed := self._derived_from_dev_secret(self.queue_secret)):
            return None
        return (
            "Queued sales' admission tokens would be signed with a key derived from the "
            f"documented development secret while the service {', '.join(exposed)}: anyone "
            "could skip the queue. Set FLASHORDER_QUEUE_SECRET (or FLASHORDER_JWT_SECRET) to a "
            "random secret of at least 32 bytes; for development only, "
            "FLASHORDER_ALLOW_DEV_SECRET=1."
        )

    def _derived_from_dev_secret(self, own: SecretStr | None) -> list[str]:
        """What exposes a key that would be derived from the documented token secret (no
        secret of its ``own``), or nothing. Nothing either when the token secret itself is
        refused: that problem is reported, and one fix ends both."""
        if (
            own is not None
            or self.jwt_secret.get_secret_value() != DEV_JWT_SECRET
            or self.allow_dev_secret
            or self.dev_secret_problem() is not None
        ):
            return []
        return self._exposure()

    def _exposure(self) -> list[str]:
        """What makes a documented secret dangerous here: an address beyond loopback, or a
        real store (whose data outlives a developer's session)."""
        exposed = []
        if not _is_loopback(self.host):
            exposed.append(f"listens on {self.host}")
        exposed += [
            f"{name} is set"
            for name, value in (
                ("FLASHORDER_DATABASE_URL", self.database_url),
                ("FLASHORDER_REDIS_URL", self.redis_url),
                ("FLASHORDER_KAFKA_BOOTSTRAP", self.kafka_bootstrap),
            )
            if value is not None
        ]
        return exposed


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        # A host name other than localhost may resolve anywhere.
        return False
