"""A MariaDB and a Redis of the drills' own, driven by ``scripts/services.sh`` (see
``conftest``)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "scripts" / "services.sh"


@dataclass(frozen=True)
class DrillServices:
    """A MariaDB and a Redis of the drills' own, and how to drive them."""

    folder: Path
    mariadb_port: int
    redis_port: int

    @property
    def env(self) -> dict[str, str]:
        """What ``scripts/services.sh`` needs to act on these servers and no others."""
        return {
            **os.environ,
            "FLASHORDER_SERVICES_DIR": str(self.folder),
            "MARIADB_PORT": str(self.mariadb_port),
            "REDIS_PORT": str(self.redis_port),
        }

    def run(self, action: str, *names: str) -> None:
        subprocess.run([str(SERVICES), action, *names], env=self.env, check=True, timeout=300)
