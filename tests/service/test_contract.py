"""The participant API contract (docs/openapi.json) and the code cannot drift apart.

Goal: the published OpenAPI 3.1 document is valid, is exactly what
payments_service.contract builds from the code's structs, names the app's and
the sidecar's routes, lists every error code the service can answer under its
status; and the running system (sidecar + service + forwarder under `symphony
up`) answers what the document says. Method: openapi-spec-validator on the file;
an AST scan of payments_service/ for `rejected(STATUS, "CODE", ...)` and error
dicts; Schemathesis generating requests from the document against the running
sidecar (bounded examples), checking no 5xx and conformance of status, headers
and bodies; then every attested answer's INGRESS and OUTCOME are looked up in
PostgreSQL, where the forwarder ships the journal.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from openapi_spec_validator import validate

from ingress_sidecar.config import SidecarConfig
from payments_service import contract
from payments_service.app import PaymentsApp
from payments_service.config import ServiceConfig
from symphony.db import connect
from tests.conftest import REPO_ROOT

PUBLISHED = REPO_ROOT / "docs" / "openapi.json"
UP_START_TIMEOUT_SECONDS = 240
EXAMPLES_PER_OPERATION = 40
RECORD_INGRESS, RECORD_OUTCOME = 2, 3


def test_published_document_is_valid_and_generated_from_the_code() -> None:
    """docs/openapi.json validates as OpenAPI 3.1 and equals what the code builds today."""
    published = json.loads(PUBLISHED.read_text())
    validate(published)
    assert published["openapi"].startswith("3.1")
    assert PUBLISHED.read_text() == contract.render(), \
        "docs/openapi.json is stale: python -m payments_service.contract > docs/openapi.json"


def test_routes_are_the_apps_and_the_sidecars() -> None:
    """Every route the service serves and the sidecar forwards is in the document, and no other."""
    app = PaymentsApp(None, None, [], None).build()  # type: ignore[arg-type]
    served = {(route.method.lower(), route.resource.canonical.replace("{payment_id}", "{payment_id}"))
              for route in app.router.routes() if route.method != "HEAD" and route.resource is not None}
    documented = {(method, path) for path, item in contract.document()["paths"].items() for method in item}
    assert served == documented
    sidecar_templates = {(r.method.lower(), r.template.replace("{id}", "{payment_id}"))
                         for r in SidecarConfig().routes}
    assert sidecar_templates == documented


def _codes_in_source() -> set[tuple[int, str]]:
    found: set[tuple[int, str]] = set()
    for path in (REPO_ROOT / "payments_service").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            status = node.args[0]
            if not (isinstance(status, ast.Constant) and isinstance(status.value, int)):
                continue
            if name == "rejected" and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                found.add((status.value, str(node.args[1].value)))
            if name == "Answer":
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Dict):
                        for key, value in zip(inner.keys, inner.values, strict=True):
                            if isinstance(key, ast.Constant) and key.value == "code" \
                                    and isinstance(value, ast.Constant):
                                found.add((status.value, str(value.value)))
    return found


def test_every_error_code_the_service_answers_is_in_the_contract() -> None:
    """An error code added to payments_service/ without the contract fails here (AST scan)."""
    found = _codes_in_source()
    assert len(found) >= 10, found  # the scan does see the codes
    missing = {(status, code) for status, code in found if code not in contract.ERRORS.get(status, {})}
    assert missing == set(), f"add these to payments_service/contract.py ERRORS and re-publish: {missing}"
    document = contract.document()
    for status, code in found:
        text = json.dumps(document["paths"]["/v1/payments"]["post"]["responses"].get(str(status), {}))
        text += json.dumps(document["paths"]["/v1/payments/{payment_id}"]["get"]["responses"].get(str(status), {}))
        assert code in text, (status, code)


def test_idempotency_semantics_are_documented() -> None:
    """The four Idempotency-Key answers and the attestation headers are in the document."""
    post = contract.document()["paths"]["/v1/payments"]["post"]
    for needle in ("400", "IDEMPOTENCY_KEY_REQUIRED", "409", "IDEMPOTENCY_KEY_IN_PROGRESS", "422",
                   "IDEMPOTENCY_KEY_MISMATCH", "Idempotent-Replayed: true"):
        assert needle in post["description"], needle
    assert post["parameters"][0]["name"] == "Idempotency-Key"
    for response in post["responses"].values():
        assert "X-Symphony-Attestation-Id" in response["headers"]
    assert "Idempotent-Replayed" in post["responses"]["201"]["headers"]


# -- Schemathesis against the running system ---------------------------------------------------


class RunningSystem:
    def __init__(self, data_dir: Path, database_url: str, target: str, token: str) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.target = target
        self.token = token
        self.attested: list[int] = []
        self.accepted: list[int] = []


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SYMPHONY_")}


@pytest.fixture(scope="module")
def running() -> Iterator[RunningSystem]:
    from symphony.app.demo import DEMO_PARTICIPANTS, make_token

    data_dir = Path(tempfile.mkdtemp(prefix="symphony-contract-"))
    config = data_dir / "up.toml"
    config.write_text("embedded_fast = true\n")
    out_path = data_dir / "up.out"
    with open(out_path, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "symphony", "up", "--data-dir", str(data_dir),
                                    "--config", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=REPO_ROOT, env=_clean_env())
    try:
        deadline = time.monotonic() + UP_START_TIMEOUT_SECONDS
        while "ready" not in out_path.read_text(errors="replace").splitlines():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"symphony up did not become ready:\n{out_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.5)
        lines = out_path.read_text().splitlines()
        target = next(line.split(": ", 1)[1].split()[0] for line in lines if line.startswith("sidecar ingress:"))
        state = json.loads((data_dir / "embedded-db.json").read_text())
        token = make_token(data_dir, DEMO_PARTICIPANTS[0], ttl_seconds=3600)
        yield RunningSystem(data_dir, state["dsn"], target, token)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def api_schema(running: RunningSystem) -> Any:
    """The published document, with this deployment's rails filled in so that valid payments are generated."""
    document = json.loads(PUBLISHED.read_text())
    body = document["components"]["schemas"]["PaymentBody"]
    body["properties"]["rail"] = {"type": "string", "enum": ServiceConfig().rails}
    body["properties"]["currency"] = {"type": "string", "enum": ["KES", "UGX", "USD"]}
    body["properties"]["amount_minor"] = {"type": "integer", "minimum": 1, "maximum": 100_000}
    return schemathesis.openapi.from_dict(document)


CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.status_code_conformance,
          schemathesis.checks.content_type_conformance, schemathesis.checks.response_headers_conformance,
          schemathesis.checks.response_schema_conformance]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("label", ["POST /v1/payments", "GET /v1/payments/{payment_id}"])
def test_the_running_system_answers_what_the_contract_says(label: str, mode: GenerationMode, api_schema: Any,
                                                           running: RunningSystem) -> None:
    """Generated requests (valid and invalid) through the real sidecar: no 5xx; status, headers and body
    conform to the document."""
    operations = {result.ok().label: result.ok() for result in api_schema.get_all_operations()}
    strategy = operations[label].as_strategy(generation_mode=mode)
    seen: list[int] = []

    @given(case=strategy)
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def one(case: Any) -> None:
        response = case.call(base_url=running.target, headers={"Authorization": f"Bearer {running.token}"},
                             timeout=30)
        seen.append(response.status_code)
        case.validate_response(response, checks=CHECKS)
        values = {k.lower(): v for k, v in response.headers.items()}.get("x-symphony-attestation-id")
        attestation = (values[0] if isinstance(values, list) else values) if values else None
        if 200 <= response.status_code < 300:
            assert attestation is not None, "an accepted request carries its attestation id"
        if attestation is not None:
            running.attested.append(int(attestation))
        if 200 <= response.status_code < 300 and case.method == "POST":
            running.accepted.append(int(attestation or 0))

    one()
    assert len(seen) >= EXAMPLES_PER_OPERATION // 2, seen
    if label.startswith("POST") and mode == GenerationMode.POSITIVE:
        assert any(status == 201 for status in seen), f"no payment was accepted: {sorted(set(seen))}"


async def _outbox_attestations(running: RunningSystem) -> set[int]:
    conn = await connect(running.database_url)
    try:
        rows = await conn.fetch("SELECT attestation_id FROM payment_outbox WHERE attestation_id = ANY($1::bigint[])",
                                running.accepted)
    finally:
        await conn.close()
    return {r["attestation_id"] for r in rows}


def test_every_attested_answer_has_its_ingress_and_outcome_in_postgres(running: RunningSystem) -> None:
    """After the fuzzing: each attestation id answered has one INGRESS and one OUTCOME row (shipped by the
    forwarder), and each accepted POST has its outbox row."""
    assert len(running.attested) >= EXAMPLES_PER_OPERATION, "the fuzz tests ran and were attested"

    async def missing() -> set[int]:
        conn = await connect(running.database_url)
        try:
            rows = await conn.fetch("SELECT attestation_id, array_agg(record_type) AS types FROM ingress_attestations "
                                    "WHERE attestation_id = ANY($1::bigint[]) GROUP BY 1", running.attested)
        finally:
            await conn.close()
        complete = {r["attestation_id"] for r in rows
                    if sorted(r["types"]) == [RECORD_INGRESS, RECORD_OUTCOME]}
        outbox = await _outbox_attestations(running)
        return (set(running.attested) - complete) | (set(running.accepted) - outbox)

    assert running.accepted, "some payments were accepted"
    deadline = time.monotonic() + 60
    left = asyncio.run(missing())
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = asyncio.run(missing())
    assert left == set(), f"attested answers without INGRESS+OUTCOME in PostgreSQL: {sorted(left)[:10]}"
