"""The JSON schemas in docs/, checked with jsonschema (draft 2020-12)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

DOCS = Path(__file__).resolve().parents[1] / "docs"


def schema(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DOCS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(data)
    return data


def validate(name: str, instance: Any) -> None:
    """Raise jsonschema.ValidationError (with the path) if `instance` does not fit."""
    jsonschema.Draft202012Validator(schema(name)).validate(instance)


def selfcheck_report(report: Any) -> None:
    validate("selfcheck.schema.json", report)


def status(data: Any) -> None:
    validate("status.schema.json", data)
