"""HTTP layer of the emulated dfget towards a supernode, with a log of every exchange (PROTOCOL §2).

dfget's rule: a call succeeds only with HTTP status exactly 200 and a JSON body; anything else is a
"transport error". The log lets tests assert on what a real client would have seen.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from dataclasses import dataclass, field

import httpx
import orjson

from app.swarm.wire import JSON_CONTENT_TYPE, SUPERNODE_USER_AGENT, node_base_url

SUPERNODE_TIMEOUT = 5.0  # dfget's per-request budget towards the supernode (§5.1)
_CODE_REQUIRED = frozenset({"/peer/registry", "/peer/task"})


@dataclass(frozen=True)
class Exchange:
    """One request to a supernode as dfget saw it; ``http_status`` None means no HTTP answer."""

    node: str
    method: str
    endpoint: str
    target: str
    http_status: int | None
    code: int | None
    elapsed: float
    error: str = ""
    at: float = 0.0  # time.monotonic() when the answer (or the failure) came: for stall checks


@dataclass
class ApiResponse:
    http_status: int | None
    body: bytes = b""
    payload: object = None
    json_ok: bool = False
    error: str = ""

    def _lookup(self, key: str) -> tuple[bool, object]:
        # Go's encoding/json matches keys case-insensitively (§2.3).
        if not isinstance(self.payload, dict):
            return False, None
        for name, value in self.payload.items():
            if isinstance(name, str) and name.lower() == key:
                return True, value
        return False, None

    @property
    def code(self) -> int | None:
        """The ``code`` dfget reads; None when dfget would not get that far (or would crash)."""
        if self.http_status != 200 or not self.json_ok:
            return None
        found, value = self._lookup("code")
        if found:
            return value if isinstance(value, int) and not isinstance(value, bool) else None
        # Only ``msg`` present: dfget's embedded struct exists and ``code`` reads as 0.
        has_msg, _ = self._lookup("msg")
        return 0 if has_msg else None

    @property
    def msg(self) -> str:
        """The answer's ``msg`` (dfget logs it when registration fails), "" when absent."""
        value = self._lookup("msg")[1]
        return value if isinstance(value, str) else ""

    @property
    def ok(self) -> bool:
        return self.code is not None

    @property
    def data(self) -> object:
        return self._lookup("data")[1]


@dataclass
class ExchangeLog:
    exchanges: list[Exchange] = field(default_factory=list)
    # Answers a real dfget would crash on or misparse (e.g. a JSON object without code/msg).
    protocol_errors: list[str] = field(default_factory=list)

    @property
    def supernode_5xx(self) -> bool:
        return any(e.http_status is not None and e.http_status >= 500 for e in self.exchanges)


class SupernodeApi:
    """Thin wrapper over one ``httpx.AsyncClient`` (fasthttp keeps connections alive the same way).

    Every request goes to the node it names and its outcome is final: dfget itself never retries a
    call on another node (it migrates, see p2p.py). Behind a VIP, retries are the load balancer's,
    and the HA tests run the real haproxy (tests/haproxy.py) rather than a model of it.
    """

    def __init__(self, client: httpx.AsyncClient, log: ExchangeLog, *, timeout: float = SUPERNODE_TIMEOUT) -> None:
        self._client = client
        self.log = log
        self._timeout = timeout

    async def get(self, node: str, target: str) -> ApiResponse:
        return await self._send("GET", node, target, None)

    async def post_json(self, node: str, target: str, body: bytes) -> ApiResponse:
        return await self._send("POST", node, target, body)

    async def _send(self, method: str, node: str, target: str, body: bytes | None) -> ApiResponse:
        """One request to ``node``, as it is: no retry here (a load balancer in the tests is the real one)."""
        headers = {"User-Agent": SUPERNODE_USER_AGENT}
        if body is not None:
            headers["Content-Type"] = JSON_CONTENT_TYPE
        started = time.monotonic()
        try:
            # fasthttp's DoTimeout is one deadline over the whole exchange (connect, send, wait, read);
            # httpx's timeouts are per phase, so a reply trickling in past 5 s would pass without this.
            async with asyncio.timeout(self._timeout):
                response = await self._client.request(
                    method, node_base_url(node) + target, content=body, headers=headers, timeout=self._timeout
                )
        except TimeoutError:
            result = ApiResponse(http_status=None, error=f"timeout: no answer in {self._timeout:g} s")
        except httpx.HTTPError as exc:
            result = ApiResponse(http_status=None, error=f"{type(exc).__name__}: {exc}")
        else:
            result = _decode(response.status_code, response.content)
        self._record(method, node, target, result, time.monotonic() - started)
        return result

    def _record(self, method: str, node: str, target: str, result: ApiResponse, elapsed: float) -> None:
        endpoint = target.split("?", 1)[0]
        self.log.exchanges.append(
            Exchange(
                node=node,
                method=method,
                endpoint=endpoint,
                target=target,
                http_status=result.http_status,
                code=result.code,
                elapsed=elapsed,
                at=time.monotonic(),
                error=result.error,
            )
        )
        # Only these two answers are dereferenced through the embedded {code,msg} pointer.
        if endpoint in _CODE_REQUIRED and result.http_status == 200 and result.json_ok:
            if result.code is None:
                self.log.protocol_errors.append(
                    f"{method} {endpoint}: JSON without code/msg (dfget crashes): {result.body[:200]!r}"
                )


def _decode(status: int, body: bytes) -> ApiResponse:
    result = ApiResponse(http_status=status, body=body)
    if status != 200:
        result.error = f"{status}:{body[:200].decode(errors='replace')}"
        return result
    try:
        result.payload = orjson.loads(body)
        result.json_ok = True
    except orjson.JSONDecodeError as exc:
        result.error = f"bad JSON: {exc}"
    return result


GoScalar = str | int | bool
_ZERO: dict[type, GoScalar] = {str: "", int: 0, bool: False}


def go_struct(payload: object, fields: dict[str, type]) -> dict[str, GoScalar]:
    """Decode a JSON object like ``encoding/json`` into a flat struct.

    Keys match case-insensitively, missing or null fields get the zero value, and a value of the
    wrong type raises TypeError (in dfget that is a decode error, i.e. a "transport error").
    """
    if not isinstance(payload, dict):
        raise TypeError(f"expected a JSON object, got {type(payload).__name__}")
    lowered = {str(k).lower(): v for k, v in payload.items()}
    out: dict[str, GoScalar] = {}
    for name, kind in fields.items():
        value = lowered.get(name.lower())
        if value is None:
            out[name] = _ZERO[kind]
        elif kind is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise TypeError(f"{name}: cannot unmarshal {value!r} into int")
        elif kind is not int and not isinstance(value, kind):
            raise TypeError(f"{name}: cannot unmarshal {value!r} into {kind.__name__}")
        elif isinstance(value, (str, int)):
            out[name] = value
    return out


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context per emulator process. httpx builds a new one per client by default, which
    loads the CA bundle again: ~57 ms of CPU each, taken from the swarm the process emulates."""
    return ssl.create_default_context()


class DelayedTransport(httpx.AsyncBaseTransport):
    """Adds ``latency`` seconds before every request leaves: a longer path to every server (df-swarm --latency)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, latency: float) -> None:
        self._inner, self._latency = inner, latency

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self._latency)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def make_http_client(
    max_connections: int = 256, *, local_address: str | None = None, latency: float = 0.0
) -> httpx.AsyncClient:
    """An httpx client without httpx's default headers, so requests carry only what dfget sends.

    ``local_address`` binds its connections to one source IP, so a peer emulated on a 127/8 address talks
    from that address, as a separate host would (the supernode's peer-IP check sees it).
    """
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    transport: httpx.AsyncBaseTransport | None = None
    if local_address is not None or latency > 0:
        transport = httpx.AsyncHTTPTransport(verify=tls_context(), limits=limits, local_address=local_address)
        if latency > 0:
            transport = DelayedTransport(transport, latency)
    client = httpx.AsyncClient(verify=tls_context(), limits=limits, timeout=SUPERNODE_TIMEOUT, transport=transport)
    client.headers.clear()
    return client
