"""The OpenAPI document is the contract: what it promises about errors, checked on the app itself.

The Schemathesis run (tests/fuzz) checks that answers match the document; these check the document says
enough: no 422 anywhere, the one error body with every code as an enum, the statuses every kind of operation
can return, and that the code list is the engine's table (a code raised anywhere in the sources is in it).
"""

from __future__ import annotations

import pathlib
import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from frontdoor_gateway.app import create_app
from frontdoor_gateway.auth import Authenticator
from frontdoor_gateway.openapi import CLIENT_ONLY_CODES, errors, install
from frontdoor_pki.config import build_service, load_config
from frontdoor_pki.errors import ERROR_STATUS

ROOT = pathlib.Path(__file__).resolve().parents[2]
ADMIN = "fdk_test_openapi_admin"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    config = load_config(state_dir=str(tmp_path_factory.mktemp("state")), env={"FRONTDOOR_RATE_LIMITS": "off"})
    return create_app(build_service(config), Authenticator.from_config(ADMIN, []))


@pytest.fixture(scope="module")
def document(app):
    with TestClient(app) as client:
        answer = client.get("/openapi.json")
    assert answer.status_code == 200
    return answer.json()


def operations(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def test_no_422_anywhere(document):
    assert '"422"' not in repr(document).replace("'", '"')
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert "ValidationError" not in document["components"]["schemas"]


def test_every_operation_documents_validation_limits_and_bugs_with_the_error_body(document):
    ops = list(operations(document))
    assert len(ops) >= 15
    for method, path, operation in ops:
        responses = operation["responses"]
        for status in ("400", "413", "429", "500"):
            assert status in responses, (method, path, status)
        for status, response in responses.items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
            else:  # a success body is described (FastAPI's default is an empty schema)
                assert "content" in response or status == "204", (method, path, status)
                for media_type, content in response.get("content", {}).items():
                    assert content.get("schema"), (method, path, status, media_type)


def test_error_codes_are_the_engines_table(document):
    schemas = document["components"]["schemas"]
    enum = schemas["ErrorCode"]["enum"]
    assert set(enum) == set(ERROR_STATUS) - CLIENT_ONLY_CODES
    body = schemas["ErrorBody"]
    assert body["properties"]["code"]["$ref"] == "#/components/schemas/ErrorCode"
    assert set(body["required"]) == {"code", "message"}
    assert schemas["Error"]["required"] == ["error"]
    assert "rate_limited" in enum and ERROR_STATUS["rate_limited"] == 429


def test_every_code_raised_in_the_sources_is_in_the_table():
    """FrontdoorError refuses an unknown code only when raised: this finds one in a path no test takes."""
    pattern = re.compile(r"""(?:FrontdoorError|_error)\(\s*["']([a-z_]+)["']""")
    found = set()
    for folder in ("plugins/module_utils", "gateway"):
        for source in (ROOT / folder).rglob("*.py"):
            found.update(pattern.findall(source.read_text(encoding="utf-8")))
    assert found, "the pattern no longer finds raised codes"
    assert found <= set(ERROR_STATUS), found - set(ERROR_STATUS)


def test_admin_operations_declare_bearer_auth_and_its_refusals(document):
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    secured = [(m, p, o) for m, p, o in operations(document) if o.get("security")]
    assert len(secured) >= 10
    for method, path, operation in secured:
        for status in ("401", "403", "429"):
            assert status in operation["responses"], (method, path, status)
    public = {(m, p) for m, p, o in operations(document) if not o.get("security")}
    assert ("POST", "/frontdoor/{frontdoorId}/client-certificates/token/{token}") in public
    assert ("GET", "/healthz") in public


def test_redemption_documents_its_statuses_and_retry_after(document):
    operation = document["paths"]["/frontdoor/{frontdoorId}/client-certificates/token/{token}"]["post"]
    assert operation["operationId"] == "redeem"
    assert {"200", "201", "400", "403", "404", "409", "410", "413", "429", "500", "502", "503"} <= set(
        operation["responses"])
    assert operation["responses"]["429"]["headers"]["Retry-After"]["required"] is True
    assert operation["responses"]["409"]["headers"]["Retry-After"]["required"] is False
    assert operation["responses"]["200"]["headers"]["X-Frontdoor-Replayed"]["required"] is True
    assert operation["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Certificate"}


def test_links_lead_from_a_created_token_to_what_can_be_done_with_it(document):
    create = document["paths"]["/frontdoor/{frontdoorId}/certificate-request-tokens"]["post"]
    links = create["responses"]["201"]["links"]
    targets = {link["operationId"] for link in links.values()}
    assert {"get_token", "update_token", "refresh_token", "delete_token", "redeem"} <= targets
    known = {o["operationId"] for _m, _p, o in operations(document)}
    for path_item in document["paths"].values():
        for operation in path_item.values():
            for response in operation["responses"].values():
                for link in response.get("links", {}).values():
                    assert link["operationId"] in known, link


def test_errors_refuses_a_status_no_code_has():
    with pytest.raises(ValueError, match="418"):
        errors(418)


def test_install_strips_422_and_adds_the_error_statuses_to_a_bare_route():
    app = FastAPI()

    @app.get("/bare/{number}")
    def bare(number: int):
        return {}

    install(app)
    responses = app.openapi()["paths"]["/bare/{number}"]["get"]["responses"]
    assert set(responses) == {"200", "400", "413", "429", "500"}
    assert responses["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert responses["429"]["headers"]["Retry-After"]["required"] is True
    assert "Error" in app.openapi()["components"]["schemas"]


def test_a_validation_error_is_400_invalid_request_and_405_lists_every_method(app):
    with TestClient(app) as client:
        answer = client.get("/frontdoor/default/certificate-request-tokens?page=-1",
                            headers={"Authorization": "Bearer " + ADMIN})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_request"
        answer = client.put("/frontdoor/default/certificate-request-tokens")
        assert answer.status_code == 405 and answer.json()["error"]["code"] == "method_not_allowed"
        assert set(answer.headers["allow"].split(", ")) == {"GET", "POST", "DELETE"}
        answer = client.put("/frontdoor/default/client-certificates/renew")
        assert answer.headers["allow"] == "POST"


def test_a_whole_float_is_the_integer_the_document_allows(app):
    """JSON Schema's integer includes 3600.0 (Schemathesis sends such values): it is 3600 seconds; 3600.5 is not
    an integer and is refused like any schema-invalid value."""
    auth = {"Authorization": "Bearer " + ADMIN}
    with TestClient(app) as client:
        answer = client.post("/frontdoor/default/certificate-request-tokens", headers=auth,
                             json={"name": "whole", "ttl": 3600.0, "certificateTtl": 86400.0})
        assert answer.status_code == 201, answer.text
        assert answer.json()["certificateTtl"] == 86400
        answer = client.post("/frontdoor/default/certificate-request-tokens", headers=auth,
                             json={"name": "half", "ttl": 3600.5})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_request"


def test_component_schemas_are_valid_json_schema_with_patterns_python_can_compile(document):
    from jsonschema import Draft202012Validator

    patterns = []

    def collect(node):
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                patterns.append(node["pattern"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    for name, schema in document["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
    collect(document)
    assert len(patterns) >= 5  # durations, names, subject fields, list words, sort
    for pattern in patterns:
        re.compile(pattern)
