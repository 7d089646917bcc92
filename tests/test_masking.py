"""Credentials in source URLs never leave the process in clear (issue 7 finding 3): not in the REST API,
not in the audit table (real Postgres), not in any log record, httpx's own request log included; while
the task id is still the one of the real URL (PROTOCOL §7.2) and the seeder still gets the real bytes."""

from __future__ import annotations

import base64
import hashlib
import logging
import os

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from app.audit.events import AuditEvent
from app.audit.rows import to_row
from app.core.config import Settings
from app.core.masking import MASK, mask_headers, mask_text, mask_url, sensitive_name
from app.protocol.taskid import task_id
from tests.cluster import TEST_TOKEN
from tests.live import live_supernode
from tests.postgres import rows
from tests.preheat_support import AUTH, poll_legacy, poll_oapi
from tests.sources import SourceServer
from tests.test_audit import _count, drained, eventually
from tests.test_bridge import registration, wait_status

# One distinct secret per place a credential hides in a URL, so a leak names its source.
SECRETS = {
    "X-Amz-Signature": "sigA1b2c3d4", "X-Amz-Credential": "AKIAcred5678", "X-Amz-Security-Token": "stsTok9012",
    "Signature": "cfSig3456", "token": "plainTok7890", "access_token": "oauthTok1357",
}
PASSWORD = "pw-Hunter2x"
QUERY = "&".join(f"{name}={value}" for name, value in SECRETS.items()) + "&X-Amz-Expires=300&part=1"


def _leaks(text: str) -> list[str]:
    return [secret for secret in [*SECRETS.values(), PASSWORD] if secret in text]


@pytest.mark.parametrize("name", [*SECRETS, "sig", "X-Goog-Signature", "api_key", "Session-Id"])
def test_each_signed_url_parameter_is_masked_and_the_rest_is_kept(name: str) -> None:
    shown = mask_url(f"https://u:{PASSWORD}@bucket.example/o.bin?{name}=S3CRETVALUE&X-Amz-Expires=300#frag")
    assert shown == f"https://{MASK}@bucket.example/o.bin?{name}={MASK}&X-Amz-Expires=300"


def test_masking_of_text_headers_and_odd_urls() -> None:
    assert mask_text(f"GET http://a:{PASSWORD}@h/x?token=t1 failed; see http://h/y?z=1") == (
        f"GET http://{MASK}@h/x?token={MASK} failed; see http://h/y?z=1")
    assert mask_text("no url here: token=abc") == "no url here: token=abc"  # only URLs are judged
    assert mask_url("http://h/x?%54oken=abc") == f"http://h/x?%54oken={MASK}"  # judged decoded
    assert mask_url("http://[::1/x") == "<unparsable URL>"
    for name in ("Authorization", "X-Registry-Auth", "X-Api-Key", "Cookie", "X-Client-Secret", "X-Signature",
                 "X-Amz-Credential", "Proxy-Authorization", "X-Auth-Token"):
        assert sensitive_name(name), name
    assert mask_headers({"X-Trace": "7", "X-Vault-Token": "v"}) == {"X-Trace": "7", "X-Vault-Token": MASK}


def test_audit_events_and_rows_are_masked_at_birth() -> None:
    url = f"http://u:{PASSWORD}@h/x?{QUERY}"
    event = AuditEvent(actor="t", action="a", target=url, detail={"url": url, "nested": [{"error": f"at {url}"}]})
    assert not _leaks(repr(event))
    # An entry an older replica buffered in clear is masked on its way to the table.
    row = to_row("1-0", {"event": f'{{"at_ms": 1, "action": "a", "target": "{url}", "detail": {{"u": "{url}"}}}}'})
    assert not _leaks(repr(row)) and row["target"] == mask_url(url)


async def test_signed_source_url_is_masked_in_api_audit_and_logs_but_seeds_with_the_real_one(
    settings: Settings, redis: Redis, pg_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # httpx logs each request URL at INFO: that line must be masked too
    settings = settings.model_copy(update={"database_url": pg_db})
    data = os.urandom(300_000)
    basic = "Basic " + base64.b64encode(f"robot:{PASSWORD}".encode()).decode()
    async with SourceServer() as source, live_supernode(settings) as sn:
        source.add("signed.bin", data, auth=basic)  # served only with the userinfo's credentials
        url = source.url("signed.bin").replace("http://", f"http://robot:{PASSWORD}@") + "?" + QUERY
        async with httpx.AsyncClient(base_url=sn.api, timeout=10,
                                     headers={"Authorization": f"Bearer {TEST_TOKEN}"}) as http:
            answer = (await http.post("/peer/registry", json=registration(url))).json()
            assert answer["code"] == 200, answer
            tid = task_id(url)
            assert answer["data"]["taskId"] == tid  # computed from the real URL, secrets and all
            await wait_status(redis, tid, "SUCCESS")
            seeded = (sn.settings.seed_path / "download" / tid[:3] / tid).stat().st_size
            assert seeded > len(data)  # the real URL was fetched: framed bytes of the whole file
            listing = (await http.get("/api/v1/tasks", params={"limit": 100})).text
            detail_reply = await http.get(f"/api/v1/tasks/{tid}")
            searched = (await http.get("/api/v1/tasks", params={"url": SECRETS["token"][-7:]})).json()
            await eventually(lambda: _count(pg_db, "seed.finished", 1), what="the seed to reach the audit table")
            await eventually(lambda: drained(redis), what="the stream to drain")
    detail = detail_reply.json()
    assert detail["ID"] == tid and not _leaks(detail_reply.text) and not _leaks(listing)
    assert detail["realMd5"] == hashlib.md5(data).hexdigest()  # the real URL's real bytes were seeded
    assert detail["rawURL"] == detail["taskURL"] == mask_url(url)
    assert f"X-Amz-Signature={MASK}" in detail["rawURL"] and "X-Amz-Expires=300" in detail["rawURL"]
    assert tid in listing
    assert searched["tasks"] == []  # a substring search is no oracle for a hidden signature
    audit = await rows(pg_db, "SELECT action, target, detail::text AS detail FROM audit_events WHERE task_id = $1", tid)
    assert {"task.created", "seed.started", "seed.finished"} <= {row["action"] for row in audit}
    for row in audit:
        assert not _leaks(row["target"] + row["detail"]), row
    assert any(row["target"] == mask_url(url) for row in audit)
    messages = [record.getMessage() for record in caplog.records]
    assert not [m for m in messages if _leaks(m)]
    fetched = [m for m in messages if m.startswith("HTTP Request:") and "signed.bin" in m]
    assert fetched, "httpx's request log was not captured, so the test proves nothing"
    assert all("robot" not in m and f"token={MASK}" in m for m in fetched), fetched


async def test_preheat_listings_and_jobs_show_signed_urls_and_token_headers_masked(settings: Settings) -> None:
    async with SourceServer() as source, live_supernode(settings) as sn:
        source.add("pre.bin", os.urandom(50_000))
        url = source.url("pre.bin") + "?" + QUERY
        headers = {"X-Auth-Token": SECRETS["token"], "X-Trace": "7"}
        async with httpx.AsyncClient(base_url=sn.api, timeout=10, headers=AUTH) as http:
            created = await http.post("/preheats", json={"type": "file", "url": url, "headers": headers})
            assert created.status_code == 201, created.text
            done = await poll_legacy(http, created.json()["ID"])
            listing = (await http.get("/preheats")).text
            job = (await http.post("/oapi/v1/jobs", json={"type": "preheat", "args": {
                "type": "file", "url": url + "&again=1", "headers": headers}})).json()
            polled = await poll_oapi(http, job["id"])
    assert done["status"] == "SUCCESS", done
    assert SECRETS["X-Amz-Signature"] not in listing and mask_url(url) in listing
    assert '"X-Auth-Token":"***"' in listing.replace(" ", "") and '"X-Trace":"7"' in listing.replace(" ", "")
    assert polled["state"] == "SUCCESS" and not _leaks(orjson.dumps(polled).decode()) and not _leaks(str(job))
