"""/api/v1/openapi.json describes exactly the routes the app serves, and is served without auth."""

from __future__ import annotations

import re
from typing import Any

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def _routes(app: Any) -> set[tuple[str, str]]:
    found = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule[len("/api/v1"):])
        for method in rule.methods - IGNORED_METHODS:
            found.add((path, method.lower()))
    return found


def test_document_matches_routes(app: Any, client: Any) -> None:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    document = response.get_json()
    assert document["openapi"].startswith("3.")
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    routes = _routes(app)
    assert routes - documented == set(), "routes missing from openapi.json"
    assert documented - routes == set(), "openapi.json describes routes that do not exist"


def test_document_is_consistent(client: Any) -> None:
    document = client.get("/api/v1/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    text = str(document)
    for name in re.findall(r"#/components/schemas/([A-Za-z]+)", text):
        assert name in schemas, name
    for path, ops in document["paths"].items():
        names = set(re.findall(r"{([a-z_]+)}", path))
        for method, op in ops.items():
            declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert declared == names, (path, method)
            assert op["responses"], (path, method)
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
