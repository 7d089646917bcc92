"""Talking to the origin ("source") the way the Go supernode did (PROTOCOL §5.1, §12.1).

Three kinds of request, all plain GETs carrying the task's headers:

* the registration-time length probe (:func:`probe_source`), closed right after the headers;
* the expiry check of a cached copy (:func:`is_fresh`), a conditional GET;
* the download itself (:func:`open_source`), streamed by the seeder.

We ask for ``Accept-Encoding: identity`` unless the user set that header: a Go client asks for gzip and
decodes it transparently, so the bytes a back-sourcing dfget writes are the *identity* bytes, and only
an identity body has a meaningful Content-Length. Redirects are followed by hand to get Go's rules
(≤ 10 hops; credentials and cookies only follow to the same host or a subdomain of it): httpx's own
policy differs (it drops Authorization on a mere port change and always drops ``Cookie``).
"""

from __future__ import annotations

import asyncio
import functools
import http.cookiejar
import re
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http import HTTPStatus

import httpx

from app.cdn.policy import SourcePolicy, SourceRefused

MAX_REDIRECTS = 10  # Go's http.Client default
USER_AGENT = "Go-http-client/1.1"  # what origins saw from the Go supernode (sample 13)
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Go strips these when a redirect leaves the original host (net/http shouldCopyHeaderOnRedirect).
_SENSITIVE_HEADERS = ("authorization", "www-authenticate", "cookie", "cookie2")
_IDENTITY = frozenset({"", "identity"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field-name
_BAD_VALUE = re.compile(r"[\r\n\x00]")
_NOT_FORWARDED = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade",
})


class SourceError(Exception):
    """A source problem, already classified (``reason`` as in ``SeedOutcome.reason``)."""

    def __init__(self, reason: str, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status


@dataclass(frozen=True)
class ProbeResult:
    length: int  # raw Content-Length, -1 when unknown (absent, encoded body, error)
    status: int  # HTTP status of the final response, 0 when none arrived
    reason: str  # "", "not_found", "auth", "server", "unreachable"
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason


def convert_headers(entries: Iterable[str] | None) -> dict[str, str]:
    """Registration ``headers`` → map, like Go's ``ConvertHeaders`` (§5.1).

    Split at the first ':', trim both sides, skip entries without a colon or with an empty value,
    join a repeated name as ``v1,v2``. Names keep their spelling (Go's map is case-sensitive too).
    A name that is not an HTTP token (empty, non-ASCII, with a space) is skipped as well: Go would
    fail every source request with it.
    """
    result: dict[str, str] = {}
    for entry in entries or ():
        name, sep, value = entry.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not value or not _TOKEN.fullmatch(name):
            continue
        result[name] = f"{result[name]},{value}" if name in result else value
    return result


def classify_status(status: int) -> str:
    if status in (200, 206):
        return ""
    if status in (404, 410):
        return "not_found"
    if status in (401, 403, 407):
        return "auth"
    return "server"


def status_message(status: int, url: str) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"source returned {status} {phrase} for {url}"


def parse_http_date_ms(value: str | None) -> int:
    """``Last-Modified`` → ms since the epoch; 0 when absent or unparsable (as Go stores it)."""
    if not value:
        return 0
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def format_http_date(ms: int) -> str:
    return format_datetime(datetime.fromtimestamp(ms / 1000, tz=UTC), usegmt=True)


@functools.cache
def _verifying_tls() -> ssl.SSLContext:
    """The TLS context of every verifying source client of this process, built once: httpx builds one per
    client by parsing the whole CA bundle (~45 ms of CPU), and a seed or preheat job makes a client of its
    own, so 1,000 tasks seeding spent ~45 s of a worker's CPU on it. Built as httpx would (certifi, or
    SSL_CERT_FILE / SSL_CERT_DIR from the environment); a changed bundle is read at the next start."""
    return httpx.create_ssl_context(verify=True, trust_env=True)


def make_source_client(
    *,
    connect_timeout: float = 3.0,
    read_timeout: float = 60.0,
    verify: bool = True,
    policy: SourcePolicy | None = None,
) -> httpx.AsyncClient:
    """The client every source request should go through.

    No cookie jar (Go's default client has none; a shared jar would leak one task's cookies into
    another's requests), proxies from the environment like Go, redirects handled by this module.
    With a ``policy`` (app.cdn.policy), every request the client sends is checked first, so each
    redirect hop of :func:`send_get` is checked too (a 302 to 169.254.169.254 is refused).
    """
    no_cookies = http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    hooks = {"request": [policy.check_request]} if policy is not None else {}
    return httpx.AsyncClient(
        timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        follow_redirects=False,
        trust_env=True,
        verify=_verifying_tls() if verify else False,
        cookies=no_cookies,
        event_hooks=hooks,
    )


def sendable_header(name: str, value: str) -> bool:
    """A user header we may put on a source request: a valid token name that is not framing or
    hop-by-hop (those belong to our client: a ``Content-Length`` on a GET made httpx refuse the request,
    a ``Transfer-Encoding`` or ``Connection`` would change the framing), and a value without CR, LF or NUL.
    Go ignores a "Host" entry in Header (it uses Request.Host); so do we."""
    lowered = name.lower()
    return (
        bool(_TOKEN.fullmatch(name)) and lowered not in _NOT_FORWARDED and not lowered.startswith("proxy-")
        and not _BAD_VALUE.search(value)
    )


def request_headers(user: Mapping[str, str], extra: Mapping[str, str] | None = None) -> httpx.Headers:
    headers = httpx.Headers()
    for name, value in user.items():
        if sendable_header(name, value):
            headers[name] = value  # a non-ASCII value goes out as UTF-8, as Go writes it
    headers.setdefault("User-Agent", USER_AGENT)
    headers.setdefault("Accept-Encoding", "identity")
    for name, value in (extra or {}).items():
        headers[name] = value
    return headers


def _decodes(headers: httpx.Headers) -> bool:
    """Whether we, like Go, hand out decoded bytes: only when we chose the Accept-Encoding."""
    return bool(headers.get("accept-encoding") == "identity")


def _hostname(url: httpx.URL) -> str:
    return url.host.lower().rstrip(".")


def _keeps_credentials(initial: httpx.URL, target: httpx.URL) -> bool:
    first, dest = _hostname(initial), _hostname(target)
    return dest == first or dest.endswith("." + first)


async def send_get(client: httpx.AsyncClient, url: str, headers: httpx.Headers) -> httpx.Response:
    """GET following redirects with Go's rules; returns an open streaming response (caller closes).

    Raises SourceError for transport problems and redirect loops, and SourceError("forbidden") when the
    client's source policy refuses a hop (checked by the client's request hook before each hop is sent).
    """
    current: httpx.URL | str = url
    strip = False
    try:
        initial = current = httpx.URL(url)
        for hop in range(MAX_REDIRECTS + 1):
            hop_headers = httpx.Headers(headers)
            if strip:
                for name in _SENSITIVE_HEADERS:
                    hop_headers.pop(name, None)
            request = client.build_request("GET", current, headers=hop_headers)
            response = await client.send(request, stream=True, follow_redirects=False)
            location = response.headers.get("location")
            if response.status_code not in _REDIRECT_STATUSES or not location:
                return response
            await response.aclose()
            if hop == MAX_REDIRECTS:
                raise SourceError("server", f"stopped after {MAX_REDIRECTS} redirects for {url}", response.status_code)
            current = current.join(location)
            # Once credentials were dropped they stay dropped (Go ≥ 1.24 does the same).
            strip = strip or not _keeps_credentials(initial, current)
    except SourceRefused as exc:
        raise SourceError(exc.reason, exc.message) from exc
    except httpx.TimeoutException as exc:
        raise SourceError("unreachable", f"timeout talking to source {current}: {exc!r}") from exc
    except (httpx.ConnectError, httpx.NetworkError, httpx.UnsupportedProtocol, httpx.InvalidURL, OSError) as exc:
        # DNS failures, refused connections and TLS handshake errors all arrive as ConnectError.
        raise SourceError("unreachable", f"cannot reach source {current}: {exc!r}") from exc
    except httpx.HTTPError as exc:  # protocol violations and the like
        raise SourceError("server", f"bad answer from source {current}: {exc!r}") from exc
    raise AssertionError("unreachable")  # pragma: no cover - the loop always returns or raises


def response_length(response: httpx.Response, decoded: bool) -> int:
    """Length of the bytes we will store; -1 when unknown (as Go's ContentLength)."""
    if decoded and response.headers.get("content-encoding", "").strip().lower() not in _IDENTITY:
        return -1  # httpx decodes it, so Content-Length counts other bytes
    try:
        length = int(response.headers.get("content-length", ""))
    except ValueError:
        return -1
    return length if length >= 0 else -1


async def probe_source(
    client: httpx.AsyncClient,
    url: str,
    headers: Mapping[str, str],
    timeout: float = 4.0,  # noqa: ASYNC109
) -> ProbeResult:
    """Registration-time probe: one GET, closed after the headers (the body is never read).

    ``length`` is the Content-Length of a 200 or 206 answer, as Go's ``resp.ContentLength``: that is the
    number of bytes the CDN and a back-sourcing dfget will store (a 206 only happens when the user's
    own headers carry a Range). Never raises for source problems.
    """
    wanted = request_headers(headers)
    try:
        async with asyncio.timeout(timeout):
            response = await send_get(client, url, wanted)
            await response.aclose()
    except TimeoutError:
        return ProbeResult(-1, 0, "unreachable", f"source probe timed out after {timeout}s for {url}")
    except SourceError as exc:
        return ProbeResult(-1, exc.status, exc.reason, exc.message)
    status = response.status_code
    reason = classify_status(status)
    if reason:
        return ProbeResult(-1, status, reason, status_message(status, url))
    return ProbeResult(response_length(response, _decodes(wanted)), status, "")


async def is_fresh(
    client: httpx.AsyncClient,
    url: str,
    headers: Mapping[str, str],
    *,
    last_modified_ms: int,
    etag: str,
    timeout: float = 4.0,  # noqa: ASYNC109 - a deadline for the whole exchange, part of the API
) -> bool:
    """Expiry check of a cached copy (§12.1): True ("not expired") on 304 or on a network error.

    Without any stored validator the copy always counts as expired. Any other status: expired.
    """
    conditions: dict[str, str] = {}
    if last_modified_ms > 0:
        conditions["If-Modified-Since"] = format_http_date(last_modified_ms)
    if etag:
        conditions["If-None-Match"] = etag
    if not conditions:
        return False
    try:
        async with asyncio.timeout(timeout):
            response = await send_get(client, url, request_headers(headers, conditions))
            await response.aclose()  # a 200 here carries the whole file: do not read it
    except (TimeoutError, SourceError):
        return True
    return response.status_code == 304


@dataclass
class SourceResponse:
    """An open download; iterate :meth:`chunks` for the stored bytes."""

    response: httpx.Response
    url: str
    length: int  # -1 when unknown
    last_modified_ms: int
    etag: str
    decoded: bool
    accept_ranges: str = ""  # the Accept-Ranges header, lower case ("none": never ask for a range)
    content_range: tuple[int, int, int] | None = None  # (first, last, total) of a 206

    @property
    def status(self) -> int:
        return self.response.status_code

    async def chunks(self) -> AsyncIterator[bytes]:
        stream = self.response.aiter_bytes() if self.decoded else self.response.aiter_raw()
        try:
            async for chunk in stream:
                if chunk:
                    yield chunk
        except httpx.TimeoutException as exc:
            raise SourceError("unreachable", f"source stalled while sending {self.url}: {exc!r}") from exc
        except httpx.HTTPError as exc:
            # A connection cut mid-body (h11 reports "peer closed connection without sending complete
            # message body") or an undecodable body.
            raise SourceError("truncated", f"source body of {self.url} cut short: {exc!r}") from exc


def parse_content_range(value: str | None) -> tuple[int, int, int] | None:
    """``bytes <first>-<last>/<total>`` → (first, last, total); None for anything else (``*`` totals too)."""
    unit, _, spec = (value or "").strip().partition(" ")
    span, _, total = spec.partition("/")
    first, _, last = span.partition("-")
    if unit.lower() != "bytes" or not all(part.isdigit() for part in (first, last, total)):
        return None
    parsed = int(first), int(last), int(total)
    return parsed if parsed[0] <= parsed[1] < parsed[2] else None


@asynccontextmanager
async def open_source(
    client: httpx.AsyncClient,
    url: str,
    headers: Mapping[str, str],
    *,
    range_start: int | None = None,
    range_end: int | None = None,
    if_range: str | None = None,
) -> AsyncIterator[SourceResponse]:
    """Start the download GET; raises SourceError unless the answer is 200 (or 206).

    With ``range_start`` a ``Range: bytes=<start>-<end>`` is sent and only 206 is accepted, unless
    ``if_range`` (an ETag or HTTP date) is given too: then the origin answers 206 while the file is
    unchanged and 200 with the whole file otherwise, and both are accepted (a resume, which checks
    ``content_range`` itself). Without a range, 200 and 206 are both accepted, like Go 1.0.x (206 appears
    when the user's own headers carry a Range; the partial body is then what dfget would store as well).
    """
    extra: dict[str, str] = {}
    if range_start is not None:
        end = "" if range_end is None else str(range_end)
        extra["Range"] = f"bytes={range_start}-{end}"
        if if_range:
            extra["If-Range"] = if_range
    wanted = request_headers(headers, extra)
    response = await send_get(client, url, wanted)
    try:
        accepted = (206,) if range_start is not None and not if_range else (200, 206)
        if response.status_code not in accepted:
            reason = classify_status(response.status_code) or "server"
            raise SourceError(reason, status_message(response.status_code, url), response.status_code)
        decoded = _decodes(wanted)
        yield SourceResponse(
            response=response,
            url=url,
            length=response_length(response, decoded),
            last_modified_ms=parse_http_date_ms(response.headers.get("last-modified")),
            etag=response.headers.get("etag", ""),
            decoded=decoded,
            accept_ranges=response.headers.get("accept-ranges", "").strip().lower(),
            content_range=parse_content_range(response.headers.get("content-range"))
            if response.status_code == 206 else None,
        )
    finally:
        await response.aclose()
