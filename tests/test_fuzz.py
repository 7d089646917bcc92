"""Schemathesis fuzzes the app's own OpenAPI against a live replica (real HTTP, real Redis): no input,
valid or not, may make the API answer 5xx. Bounded: a few examples per operation, well under a minute.

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
from schemathesis.checks import not_a_server_error

from app.core.config import Settings
from app.main import create_app
from tests.cluster import TEST_TOKEN, free_port
from tests.conftest import REDIS_BASE, STATE_DB

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}

# Operations that make the supernode fetch a URL taken from the request (the registration probe,
# preheats, registry webhooks): generated URLs could name any host, and tests only talk to loopback.
OUTBOUND = r"^/(v[0-9.]+/)?(peer/registry|api/v1/preheats|preheats|oapi/|api/v1/webhooks|webhooks?/)"


def fuzz_settings(home: Path) -> Settings:
    return Settings(
        redis_url=f"{REDIS_BASE}/{STATE_DB}", home=home / "home", seed_dir=home / "seed", advertise_ip="127.0.0.1",
        source_allowlist="127.0.0.0/8", api_tokens=f"tests:{TEST_TOKEN}", port=free_port(),
        # An audit database, so that /api/v1/audit is fuzzed down to its queries (without one it is a 503).
        database_url=f"sqlite:///{home / 'audit.db'}",
    )


schema = schemathesis.openapi.from_dict(create_app(fuzz_settings(Path("/nonexistent"))).openapi()).exclude(
    path_regex=OUTBOUND
)


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
    server.should_exit = True
    thread.join(30)


@schema.parametrize()
@hypothesis_settings(
    max_examples=15, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
def test_no_input_makes_the_api_answer_5xx(case: schemathesis.Case, live_url: str) -> None:
    case.call_and_validate(base_url=live_url, headers=AUTH, checks=[not_a_server_error], timeout=10)
