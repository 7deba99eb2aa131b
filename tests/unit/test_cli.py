"""The command line: each command loads only what it uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jwt

from flashorder.config import Settings
from flashorder.domain.model import UserId
from flashorder.entrypoints.api.auth import Authenticator, Principal
from flashorder.entrypoints.tokens import mint_token

#: What only serving, the workers or the checks of tokens need.
HEAVY = ("fastapi", "starlette", "sqlalchemy", "aiokafka", "redis", "uvicorn", "cryptography")

SECRET = "a-test-secret-of-at-least-32-bytes-0123456789"


def _loaded_after(code: str) -> set[str]:
    """The top-level packages among HEAVY that a fresh interpreter has loaded after ``code``."""
    probe = (
        f"import sys\n{code}\n"
        "import json\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={"FLASHORDER_JWT_SECRET": SECRET, "PATH": ""},
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_importing_the_cli_loads_no_framework_nor_client() -> None:
    assert _loaded_after("import flashorder.entrypoints.cli") == set()


def test_help_and_token_load_no_framework_nor_client() -> None:
    run = (
        "from typer.testing import CliRunner\n"
        "from flashorder.entrypoints.cli import cli\n"
        "for args in (['--help'], ['token', '--user', 'x']):\n"
        "    assert CliRunner().invoke(cli, args).exit_code == 0, args\n"
    )
    assert _loaded_after(run) == set()


def test_the_token_command_prints_a_token_the_api_accepts() -> None:
    done = subprocess.run(
        [Path(sys.executable).with_name("flashorder"), "token", "--user", "ann", "--admin"],
        capture_output=True,
        text=True,
        check=True,
        env={"FLASHORDER_JWT_SECRET": SECRET, "PATH": ""},
    )
    token = done.stdout.strip()

    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="flashorder-api")
    assert claims["sub"] == "ann"
    assert claims["roles"] == ["admin"]
    assert claims["exp"] - claims["iat"] == 3600


async def test_a_minted_token_passes_the_api_s_check() -> None:
    settings = Settings(jwt_secret=SECRET, jwt_issuer="shop", jwt_audience="buyers")

    principal = await Authenticator(settings).principal(mint_token(settings, "bob", ttl=60))

    assert principal == Principal(UserId("bob"), False)
    header = jwt.get_unverified_header(mint_token(settings, "bob"))
    assert header == {"alg": "HS256", "typ": "JWT"}
