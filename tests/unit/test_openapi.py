"""The OpenAPI description keeps the promises that generated clients rely on (docs/api.md).

tests/e2e/test_generated_client.py shows it from outside, with a generated client; these
check the rules themselves, so that a new route breaks one here, by name.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from flashorder.config import Settings
from flashorder.domain import errors
from flashorder.entrypoints.api import create_app
from flashorder.entrypoints.api.openapi import problem_example
from flashorder.entrypoints.api.problems import CASES, MEDIA_TYPE, PROBLEM_REF, ProblemType
from flashorder.entrypoints.api.problems import _extra as problem_extra


def describe(**settings: Any) -> dict[str, Any]:
    document: dict[str, Any] = create_app(Settings(**settings), background=False).openapi()
    return document


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return describe()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_operation_ids_are_short_unique_and_camel_case(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(document)]

    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z][a-zA-Z]{2,29}", i) for i in ids), ids
    assert {"placeOrder", "getOrder", "listOrders", "cancelOrder", "createProduct"} <= set(ids)


def test_every_schema_has_a_deliberate_name(document: dict[str, Any]) -> None:
    for name in document["components"]["schemas"]:
        # FastAPI's generated names join the route's name and path: long, with underscores.
        assert re.fullmatch(r"[A-Z][A-Za-z]{2,29}", name), name


def test_every_error_response_is_the_one_problem_component(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400 or path == "/readyz":
                continue
            where = f"{method} {path} {status}"
            assert response["content"] == {
                MEDIA_TYPE: {
                    "schema": {"$ref": PROBLEM_REF},
                    "examples": response["content"][MEDIA_TYPE]["examples"],
                }
            }, where
            types = [ProblemType(t) for t in response["x-problem-types"]]
            assert types, where
            assert {CASES[t][0] for t in types} == {int(status)}, where
            assert set(response["content"][MEDIA_TYPE]["examples"]) == {t.case for t in types}


def test_each_operation_lists_its_own_problem_types(document: dict[str, Any]) -> None:
    def types(path: str, method: str, status: str) -> set[str]:
        response = document["paths"][path][method]["responses"][status]
        return {ProblemType(t).case for t in response["x-problem-types"]}

    assert types("/api/v1/orders", "post", "409") == {
        "sold-out",
        "limit-reached",
        "duplicate-in-flight",
        "sale-not-started",
        "sale-ended",
        "queue-admission-required",
        "admission-token-expired",
    }
    assert types("/api/v1/orders", "post", "403") == {"forbidden", "admission-token-invalid"}
    assert types("/api/v1/sales/{product_id}/queue", "post", "409") == {
        "queue-not-open",
        "sale-ended",
    }
    assert "price-mismatch" in types("/api/v1/orders", "post", "422")
    assert "price-mismatch" not in types("/api/v1/orders/{order_id}", "get", "422")
    assert types("/api/v1/products/{product_id}/stock", "post", "409") == {"stock-below-committed"}


def _validator(document: dict[str, Any], name: str) -> Draft202012Validator:
    # The components as one resource, so that their $refs to each other resolve.
    root = Resource.opaque({"components": document["components"]})
    registry: Registry[Any] = Registry().with_resource("urn:doc", root)
    return Draft202012Validator({"$ref": f"urn:doc#/components/schemas/{name}"}, registry=registry)


def test_every_problem_example_and_extension_member_is_declared(document: dict[str, Any]) -> None:
    declared = set(document["components"]["schemas"]["Problem"]["properties"])
    validator = _validator(document, "Problem")
    for type_ in ProblemType:
        example = problem_example(type_)
        assert list(validator.iter_errors(example)) == [], type_
    for error in (
        errors.SoldOut("P"),
        errors.LimitReached("P", 2),
        errors.PriceMismatch("paymentAmount", 1, 2),
        errors.StockBelowCommitted("P", 3),
    ):
        assert set(problem_extra(error)) <= declared, error


def test_response_schemas_are_open_to_new_members(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for name, schema in schemas.items():
        if name.endswith("In"):
            # Requests refuse unknown members, on purpose (a misspelt field must not pass).
            continue
        assert schema.get("additionalProperties") is not False, name


def test_always_present_members_are_required(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for name in ("DiscountPolicyOut", "OrderOut", "ProductOut", "Readiness", "Problem"):
        schema = schemas[name]
        optional = set(schema["properties"]) - set(schema.get("required", []))
        if name == "Problem":
            # The extension members come with some types only.
            assert "type" not in optional
            continue
        assert not optional, (name, optional)


def test_the_limits_are_the_settings_that_the_routes_enforce() -> None:
    document = describe(max_items_per_order=7, max_quantity_per_item=3, max_body_bytes=4096)
    schemas = document["components"]["schemas"]

    assert schemas["PlaceOrderIn"]["properties"]["items"]["maxItems"] == 7
    assert schemas["OrderItemIn"]["properties"]["quantity"]["maximum"] == 3
    description = document["paths"]["/api/v1/orders"]["post"]["description"]
    assert "at most 7 items" in description
    assert "4096 bytes" in description


def test_replays_headers_servers_and_security_are_declared(document: dict[str, Any]) -> None:
    created = document["paths"]["/api/v1/orders"]["post"]["responses"]["201"]
    assert created["headers"]["Idempotent-Replayed"]["schema"] == {"type": "boolean"}
    assert "200" not in document["paths"]["/api/v1/orders"]["post"]["responses"]
    assert document["servers"] == [
        {"url": "/", "description": document["servers"][0]["description"]}
    ]
    assert document["components"]["securitySchemes"]["HTTPBearer"]["bearerFormat"] == "JWT"
    ready = document["paths"]["/readyz"]["get"]["responses"]
    for status in ("200", "503"):
        assert ready[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Readiness"
        }
