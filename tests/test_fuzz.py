"""Schemathesis fuzzes the app's own OpenAPI against a live replica (real HTTP, real Redis) with every
check (issue 7 finding 12): no 5xx, only documented status codes and bodies, an ``Allow`` header on 405,
schema-valid requests accepted and schema-violating ones rejected, preheat and webhook bodies included.
Bounded: 15 examples per operation, about a minute. dfget's routes are plain Starlette routes, not in
the document on purpose (PROTOCOL §5); tests/test_no_500.py and tests/test_parsers_property.py cover them.

The schema is taken from the app object at import (no I/O); the replica runs only while this module's
tests do, in a thread of its own, so nothing of it lingers into other tests' Redis db.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.config import SchemathesisConfig

from app.core.config import Settings
from app.main import create_app
from tests.cluster import TEST_TOKEN, free_port
from tests.conftest import REDIS_BASE, STATE_DB

# Operations whose answer to a schema-valid request also depends on the source policy: DF_SOURCE_ALLOWLIST
# is loopback only here, so nearly every generated URL is refused (400), and the Open API answers 422 for a
# URL whose host the source client cannot use (no JSON Schema keyword says "IDNA-valid"). Those are correct
# answers to a well-formed request, so the positive-data check accepts them there (and only there).
POLICY_DEPENDENT = r"^/(api/v1/)?preheats$|^/oapi/v1/jobs$|^/api/v1/webhooks/harbor$"
WEBHOOK_SECRET = "fuzz-webhook-secret"
CASES: list[str] = []  # one entry per generated case, for the count in the report
WEBHOOK_STATUSES: list[int] = []


def fuzz_settings(home: Path) -> Settings:
    return Settings(
        redis_url=f"{REDIS_BASE}/{STATE_DB}", home=home / "home", seed_dir=home / "seed", advertise_ip="127.0.0.1",
        source_allowlist="127.0.0.0/8", api_tokens=f"tests:{TEST_TOKEN}", port=free_port(),
        # An audit database, so that /api/v1/audit is fuzzed down to its queries (without one it is a 503).
        database_url=f"sqlite:///{home / 'audit.db'}",
        # Webhooks enabled, so that their bodies are fuzzed past the secret check.
        harbor_webhook_secret=WEBHOOK_SECRET,
    )


CONFIG = SchemathesisConfig.from_dict({
    # The token goes where the document says (HTTPBearer), so that the "no auth" cases stay without it.
    "auth": {"openapi": {"HTTPBearer": {"bearer": TEST_TOKEN}}},
    # Unknown query parameters are ignored, as the Go supernode ignored them (clients send extra ones).
    "generation": {"allow-extra-parameters": False},
    "operations": [
        {"include-path-regex": POLICY_DEPENDENT,
         "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "403", "404", "422"]}}},
        # The webhook's secret is no security scheme of the document (Harbor copies it verbatim): sent as is.
        {"include-path-regex": "^/api/v1/webhooks/harbor$", "headers": {"Authorization": WEBHOOK_SECRET}},
    ],
})
schema = schemathesis.openapi.from_dict(create_app(fuzz_settings(Path("/nonexistent"))).openapi(), config=CONFIG)


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = fuzz_settings(tmp_path_factory.mktemp("fuzz"))
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="fuzz-replica", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the fuzzed replica did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{settings.port}"
    past_secret = sum(status not in (401, 403, 405) for status in WEBHOOK_STATUSES)
    print(f"schemathesis: {len(CASES)} cases over {len(set(CASES))} operations, {past_secret} webhook bodies parsed")
    assert not WEBHOOK_STATUSES or past_secret, "no webhook body got past the secret check: nothing was fuzzed"
    server.should_exit = True
    thread.join(30)


@schema.parametrize()
@hypothesis_settings(
    max_examples=15, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
def test_the_api_does_what_its_openapi_document_says(case: schemathesis.Case, live_url: str) -> None:
    CASES.append(case.operation.label)
    response = case.call_and_validate(base_url=live_url, timeout=10)
    if case.operation.path == "/api/v1/webhooks/harbor":
        WEBHOOK_STATUSES.append(response.status_code)
