"""The shipped deployment files never run on the public development secret."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_requires_a_jwt_secret_of_the_users_own() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())

    for name in ("api", "relay", "projector"):
        secret = compose["services"][name]["environment"]["FLASHORDER_JWT_SECRET"]
        # ``${VAR:?message}``: compose refuses to start when it is unset or empty.
        assert secret.startswith("${FLASHORDER_JWT_SECRET:?"), (name, secret)
        assert "openssl rand" in secret
        assert "ALLOW_DEV_SECRET" not in str(compose["services"][name])


def test_the_image_serves_beyond_loopback_so_it_needs_a_secret_of_its_own() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert 'CMD ["flashorder", "serve", "--host", "0.0.0.0"]' in dockerfile
    assert "FLASHORDER_JWT_SECRET" not in dockerfile.split("CMD")[-1]
    assert "ENV FLASHORDER_ALLOW_DEV_SECRET" not in dockerfile
