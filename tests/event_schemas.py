"""The published event schemas (docs/schemas), as a consumer loads them: by their ``$id``.

Every schema declares its ``$id``; the references between them are relative to it, so a
registry built from the files' contents alone resolves them, whatever the files are named.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator, FormatChecker
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schemas"
#: The ``$id`` of every schema is this, then its file name.
BASE = "https://flashorder.example/schemas/events/"


def schema_files() -> list[Path]:
    return sorted(SCHEMAS.glob("*.schema.json"))


@cache
def registry() -> Registry[Any]:
    # ``from_contents`` reads the draft from ``$schema``; ``@`` files each under its own $id.
    resources = [Resource.from_contents(json.loads(p.read_text())) for p in schema_files()]
    return resources @ Registry()


def schema_id(event_type: str) -> str:
    return f"{BASE}{event_type}.schema.json"


@cache
def validator(event_type: str) -> Draft7Validator:
    return Draft7Validator(
        {"$ref": schema_id(event_type)}, registry=registry(), format_checker=FormatChecker()
    )


def errors_of(event_type: str, document: dict[str, Any]) -> list[str]:
    """How ``document`` fails the schema of ``event_type``; [] if it is valid."""
    return [
        f"{list(e.absolute_path)}: {e.message}" for e in validator(event_type).iter_errors(document)
    ]


def event_errors(document: dict[str, Any]) -> list[str]:
    """How an event as read from the wire fails the schema of its own ``type``."""
    event_type = document.get("type")
    if not isinstance(event_type, str) or schema_id(event_type) not in registry():
        return [f"no published schema for the event type {event_type!r}"]
    return errors_of(event_type, document)
