"""The shipped deployment files never run on the public development secret."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flashorder.config import DEV_JWT_SECRET, DEV_PAYMENT_WEBHOOK_SECRET, Settings

ROOT = Path(__file__).resolve().parents[2]
APP = ("api", "relay", "projector", "expirer")


def compose() -> dict[str, dict[str, dict[str, object]]]:
    loaded: dict[str, dict[str, dict[str, object]]] = yaml.safe_load(
        (ROOT / "docker-compose.yml").read_text()
    )
    return loaded


def test_compose_gives_every_app_process_generated_secrets() -> None:
    services = compose()["services"]

    for name in APP:
        app = services[name]
        env = app["environment"]
        assert isinstance(env, dict)
        assert env["FLASHORDER_JWT_SECRET_FILE"] == "/app/secrets/jwt", name
        assert env["FLASHORDER_PAYMENT_WEBHOOK_SECRET_FILE"] == "/app/secrets/payment-webhook"
        assert "FLASHORDER_JWT_SECRET" not in env
        assert "FLASHORDER_PAYMENT_WEBHOOK_SECRET" not in env
        assert "FLASHORDER_ALLOW_DEV_SECRET" not in env
        assert "secrets:/app/secrets:ro" in app["volumes"]  # type: ignore[operator]
        depends = app["depends_on"]
        assert isinstance(depends, dict)
        assert depends["secrets"] == {"condition": "service_completed_successfully"}
    assert "secrets:/app/secrets" in services["secrets"]["volumes"]  # type: ignore[operator]


def test_the_backing_services_start_without_any_variable_set() -> None:
    # A required variable (``${X:?}``) fails every compose command, even one starting only
    # MariaDB, Redis and Kafka for the tests.
    assert "${" not in (ROOT / "docker-compose.yml").read_text()


def test_the_init_step_writes_the_secrets_once_that_the_settings_read(tmp_path: Path) -> None:
    command = compose()["services"]["secrets"]["command"]
    assert isinstance(command, list)
    script = str(command[-1]).replace("/app/secrets/", f"{tmp_path}/")
    written = (tmp_path / "jwt", tmp_path / "payment-webhook")

    subprocess.run([sys.executable, "-c", script], check=True)
    first = [path.read_text() for path in written]
    subprocess.run([sys.executable, "-c", script], check=True)

    assert [path.read_text() for path in written] == first  # kept, not replaced
    settings = Settings(
        jwt_secret_file=written[0], payment_webhook_secret_file=written[1], host="0.0.0.0"
    )
    assert settings.jwt_secret.get_secret_value() == first[0]
    assert settings.payment_webhook_secret.get_secret_value() == first[1]
    assert first[0] != first[1]
    assert all(len(secret) >= 32 for secret in first)
    assert settings.dev_secret_problem() is None
    assert settings.webhook_secret_problem() is None
    assert settings.payment_webhook_secret.get_secret_value() != DEV_PAYMENT_WEBHOOK_SECRET


def test_a_secret_file_too_short_is_refused(tmp_path: Path) -> None:
    (tmp_path / "jwt").write_text("short\n")

    with pytest.raises(ValueError, match="at least 32 bytes"):
        Settings(jwt_secret_file=tmp_path / "jwt")
    # A secret given directly wins over the file.
    given = Settings(jwt_secret="g" * 40, jwt_secret_file=tmp_path / "nope")
    assert given.jwt_secret.get_secret_value() == "g" * 40
    assert given.jwt_secret.get_secret_value() != DEV_JWT_SECRET


def test_the_image_serves_beyond_loopback_so_it_needs_a_secret_of_its_own() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert 'CMD ["flashorder", "serve", "--host", "0.0.0.0"]' in dockerfile
    assert "ENV FLASHORDER_ALLOW_DEV_SECRET" not in dockerfile
    assert "ENV FLASHORDER_JWT_SECRET" not in dockerfile
    assert "ENV FLASHORDER_PAYMENT_WEBHOOK_SECRET" not in dockerfile
    # The documented run command gives both secrets: it would be refused otherwise.
    assert "-e FLASHORDER_JWT_SECRET=" in dockerfile
    assert "-e FLASHORDER_PAYMENT_WEBHOOK_SECRET=" in dockerfile
