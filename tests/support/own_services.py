"""Servers of a test's own, driven by ``scripts/services.sh``: the fault drills' MariaDB and
Redis (``tests/drills/conftest.py``), the Kafka that the Kafka outage test stops
(``tests/integration/test_event_flow.py``). Each lives in a folder of its own on free ports,
so that stopping it takes down nothing the rest of the suite uses."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "scripts" / "services.sh"


@dataclass(frozen=True)
class DrillServices:
    """Servers of a test's own (those it starts), and how to drive them."""

    folder: Path
    mariadb_port: int = 0
    redis_port: int = 0
    kafka_port: int = 0
    kafka_controller_port: int = 0

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def env(self) -> dict[str, str]:
        """What ``scripts/services.sh`` needs to act on these servers and no others."""
        ports = {
            "MARIADB_PORT": self.mariadb_port,
            "REDIS_PORT": self.redis_port,
            "KAFKA_PORT": self.kafka_port,
            "KAFKA_CONTROLLER_PORT": self.kafka_controller_port,
        }
        return {
            **os.environ,
            "FLASHORDER_SERVICES_DIR": str(self.folder),
            # A port left at 0 belongs to a server this test does not start.
            **{name: str(port) for name, port in ports.items() if port},
        }

    def run(self, action: str, *names: str) -> None:
        subprocess.run([str(SERVICES), action, *names], env=self.env, check=True, timeout=300)
