"""The official OpenAPI specs vendored in `exporter/local/specs/` (contacts, lists, custom
fields): the routes of their paths, and every /v3 request validated against them with
openapi-core, so what the spec rejects is rejected here (400, one error per problem, `field` as
`contacts[0].email`; 415 for a body that is not JSON). Error messages never echo the value."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final, cast

from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest
from openapi_core.templating.media_types.exceptions import MediaTypeNotFound
from openapi_core.validation.request.exceptions import (
    MissingRequiredParameter,
    ParameterValidationError,
)
from werkzeug.wrappers import Request

from exporter.local.sandbox.answers import Problem

SPEC_DIR: Final = Path(__file__).resolve().parents[1] / "specs"
SPEC_FILES: Final = (
    "tsg_mc_contacts_v3.json",
    "tsg_mc_lists_v3.json",
    "tsg_mc_custom_fields_v3.json",
)


@dataclass(frozen=True, slots=True)
class Route:
    template: str
    pattern: re.Pattern[str]
    methods: frozenset[str]
    with_body: frozenset[str]
    openapi: OpenAPI


@cache
def routes() -> tuple[Route, ...]:
    """Every path of the three specs, loaded once per process (about 0.4 s), the routes with
    fewer parameters first so `/contacts/count` wins over `/contacts/{id}`."""
    routes: list[Route] = []
    for name in SPEC_FILES:
        spec = json.loads((SPEC_DIR / name).read_text(encoding="utf-8"))
        spec["servers"] = [{"url": "/"}]  # the files declare api.sendgrid.com
        openapi = OpenAPI.from_dict(spec)
        for template, item in spec["paths"].items():
            regex = re.sub(r"\\\{\w+\\\}", "([^/]+)", re.escape(template))
            operations = {m: op for m, op in item.items() if m != "parameters"}
            routes.append(
                Route(
                    template=template,
                    pattern=re.compile(regex),
                    methods=frozenset(m.upper() for m in operations),
                    with_body=frozenset(
                        m.upper() for m, op in operations.items() if "requestBody" in op
                    ),
                    openapi=openapi,
                )
            )
    routes.sort(key=lambda r: r.template.count("{"))
    return tuple(routes)


def find_route(path: str) -> tuple[Route, tuple[str, ...]] | None:
    for route in routes():
        match = route.pattern.fullmatch(path)
        if match:
            return route, match.groups()
    return None


def _field_path(parts: Iterable[Any]) -> str | None:
    """`contacts[0].first_name` from jsonschema's path deque; None for the body itself."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or None


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _schema_problems(
    schema_errors: Iterable[Exception], prefix: str | None = None
) -> list[Problem]:
    """Short messages from jsonschema errors, never echoing the (possibly huge) value."""
    problems: list[Problem] = []
    seen: set[Problem] = set()
    for error in schema_errors:
        keyword = getattr(error, "validator", None)
        expected = getattr(error, "validator_value", None)
        path = [*([prefix] if prefix else []), *getattr(error, "absolute_path", ())]
        if keyword == "required":
            instance = getattr(error, "instance", None)
            missing = [
                p for p in expected or () if isinstance(instance, dict) and p not in instance
            ]
            new = [(_field_path([*path, p]), "is required") for p in missing]
        else:
            new = [(_field_path(path), _schema_message(keyword, expected))]
        for problem in new:
            if problem not in seen:
                seen.add(problem)
                problems.append(problem)
    return problems


def _schema_message(keyword: Any, expected: Any) -> str:
    if keyword == "type":
        names = [expected] if isinstance(expected, str) else list(expected)
        return f"must be of type {' or '.join(names)}"
    messages: dict[str, str] = {
        "maxLength": "must be at most {} characters",
        "minLength": "must be at least {} characters",
        "maxItems": "must have at most {} items",
        "minItems": "must have at least {} items",
        "maxProperties": "must have at most {} properties",
        "maximum": "must be at most {}",
        "minimum": "must be at least {}",
        "format": "must be a {}",
        "pattern": "must match {}",
    }
    if keyword == "enum":
        return "must be one of " + ", ".join(map(str, expected))
    if isinstance(keyword, str) and keyword in messages:
        return messages[keyword].format(_number(expected))
    return f"is not valid ({keyword})"


def spec_problems(openapi: OpenAPI, request: Request) -> tuple[int, list[Problem]]:
    """Validate against the spec: (status, problems); status 415 for a foreign content type."""
    problems: list[Problem] = []
    for error in openapi.iter_request_errors(WerkzeugOpenAPIRequest(request)):
        cause = error.__cause__
        if isinstance(cause, MediaTypeNotFound):
            return 415, [(None, "Content-Type must be application/json")]
        if isinstance(error, MissingRequiredParameter):
            problems.append((error.name, "is required"))
        elif isinstance(error, ParameterValidationError):
            schema_errors = getattr(cause, "schema_errors", None)
            if schema_errors:
                problems.extend(_schema_problems(schema_errors, prefix=error.name))
            else:  # a CastError: the text is not a number/boolean/...
                kind = getattr(cause, "type", None)
                problems.append((error.name, f"must be of type {kind}" if kind else "is invalid"))
        elif cause is not None and getattr(cause, "schema_errors", None) is not None:
            problems.extend(_schema_problems(cast(Any, cause).schema_errors))
        else:
            problems.append((None, "invalid request"))
    return 400, problems
