"""The API contract is the OpenAPI document: Schemathesis against a real gateway finds nothing.

A real ``frontdoor-gateway serve`` (SQLite + local CA in a temporary state dir) is started; Schemathesis' own CLI
(``st run``) reads the gateway's ``/openapi.json`` and runs every phase — examples, coverage, fuzzing and the
stateful phase, which follows the document's links (create a token, then read, update, refresh, delete or redeem
it; redeem, then read or revoke the certificate, or redeem again) — with every check: no server error, no status
that the document does not list, no body or header that does not match it, no Content-Type it does not declare,
negative data refused, schema-valid data accepted, auth not ignored, 405 with Allow on other methods.

Two things are added to the document the run uses, and only there:

* the success and error models forbid fields they do not list (the published document leaves them open so that
  clients generated from it keep working when the API grows), so a field a view returns and the document does
  not describe is a failure here;
* the redemption links carry a real CSR as the body, so that stateful scenarios issue certificates (a CSR is a
  signed structure JSON Schema cannot describe; random strings are only ever ``invalid_csr``).

Size: ``FRONTDOOR_FUZZ=long`` (``make fuzz``) runs many examples for up to ``FRONTDOOR_FUZZ_MINUTES`` (default 15),
half for examples/coverage/fuzzing and half for the stateful phase, a new seed each time; the default is a CI-sized
run, 45 s for each half, with a fixed seed (answers still differ: ids and secrets are random).
Rate limits are off unless ``FRONTDOOR_FUZZ_RATE_LIMITS=on``: thousands of wrong secrets from one address would
otherwise turn most redemptions into 429 and leave the engine unexplored (429 itself is documented and tested by
the rate-limit tests).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
from support.crypto import make_csr, shared_key
from support.gateway import run_gateway

HERE = os.path.dirname(os.path.abspath(__file__))
ST = os.path.join(os.path.dirname(sys.executable), "st")
LONG = os.environ.get("FRONTDOOR_FUZZ") == "long"

pytestmark = pytest.mark.slow


def strict_document(document: dict, csr_pem: str) -> dict:
    """The document the run checks against (see the module docstring)."""
    strict = copy.deepcopy(document)
    for schema in strict.get("components", {}).get("schemas", {}).values():
        if schema.get("type") == "object" and "properties" in schema:
            schema.setdefault("additionalProperties", False)
    redeem_body = {"type": "CSR", "value": csr_pem}
    for path_item in strict["paths"].values():
        for operation in path_item.values():
            for response in operation.get("responses", {}).values():
                for name, link in response.get("links", {}).items():
                    if link.get("operationId") == "redeem":
                        link["requestBody"] = "$request.body" if name == "redeemAgain" else redeem_body
    return strict


MINUTES = int(os.environ.get("FRONTDOOR_FUZZ_MINUTES", "15"))
# Seconds per run. Two runs, so that on a busy machine the stateful phase still gets its share of the time.
BUDGET = MINUTES * 30 if LONG else 45


def schemathesis_args(base_url: str, schema_path: str, admin_token: str, report_dir: str, phases: str) -> list:
    args = [
        ST, "--config-file", os.path.join(HERE, "schemathesis.toml"), "--no-color", "run", schema_path,
        "--url", base_url,
        "--header", "Authorization: Bearer %s" % admin_token,
        "--phases", phases,
        "--workers", "1",
        "--request-timeout", "30",
        "--report", "junit", "--report-dir", report_dir,
        "--suppress-health-check", "too_slow",
        "--max-time", str(BUDGET),
    ]
    if LONG:
        args += ["--max-examples", "500"]  # a new seed each run
    else:
        args += ["--max-examples", "25", "--seed", "20261204"]
    return args


def run_schemathesis(gateway, schema_path, tmp_path, phases: str) -> str:
    run = subprocess.run(
        schemathesis_args(gateway.url, str(schema_path), gateway.admin_token, str(tmp_path / "report"), phases),
        capture_output=True, text=True, timeout=BUDGET + 300, check=False,
        cwd=str(tmp_path),  # st keeps its cache in the working directory
    )
    output = run.stdout + run.stderr
    print(output[-20000:])
    assert run.returncode == 0, "schemathesis (%s) found failures:\n%s" % (phases, output[-20000:])
    assert "Tested: " in output, output[-5000:]
    return output


def issued(gateway) -> int:
    return gateway.request("GET", "/frontdoor/default/client-certificates?size=1").json()["totalElements"]


def test_schemathesis_finds_nothing(tmp_path):
    env = {"FRONTDOOR_RATE_LIMITS": os.environ.get("FRONTDOOR_FUZZ_RATE_LIMITS", "off")}
    with run_gateway(str(tmp_path / "state"), env=env, extra_args=("--no-access-log",)) as gateway:
        document = gateway.session.get(gateway.url + "/openapi.json", timeout=30).json()
        schema_path = tmp_path / "openapi.json"
        schema_path.write_text(json.dumps(strict_document(document, make_csr(shared_key("p256"), cn="fuzz.example"))))

        run_schemathesis(gateway, schema_path, tmp_path, "examples,coverage,fuzzing")
        before = issued(gateway)
        output = run_schemathesis(gateway, schema_path, tmp_path, "stateful")
        assert "Stateful" in output and "Scenarios:" in output, output[-5000:]
        # The stateful phase really went through the workflow: certificates were issued through the links.
        assert issued(gateway) > before, "no redemption succeeded: the stateful links did not reach redeem"

        log = gateway.log()
        assert "Traceback" not in log and "unexpected error" not in log, log[-5000:]
