"""Credentials out of everything that leaves the process: URLs, headers, log records.

A source URL may carry its credentials in the userinfo (``https://user:pass@host``) or, for a presigned
object-store URL, in the query (``X-Amz-Signature``, ``X-Amz-Credential``, ``X-Amz-Security-Token``,
``Signature``, ``token``, ``access_token``, Azure's ``sig``...). The real URL stays in Redis (the task
id is computed from it, PROTOCOL §7.2, and the seeder fetches it); what an API reply, an audit row or a
log line shows goes through :func:`mask_url` / :func:`mask_text`.

Names are judged by pattern, not by an exact list: a new signing scheme ``X-Foo-Signature`` or a header
``X-Registry-Auth`` is masked without anyone having to add it here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

MASK = "***"
_SENSITIVE = re.compile(r"auth|token|secret|signature|credential|cookie|key|passw|session", re.IGNORECASE)
# Short names too generic for a pattern, but a signature wherever they appear in a signed URL.
_SENSITIVE_EXACT = frozenset({"sig", "signed", "sas", "policy", "x-goog-signature"})
# A URL inside free text: a scheme, then everything up to whitespace or a quote that ends it.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def sensitive_name(name: str) -> bool:
    """Whether a header or query parameter of this name carries a credential."""
    return bool(_SENSITIVE.search(name)) or name.lower() in _SENSITIVE_EXACT


def _mask_query(query: str) -> str:
    if not query:
        return query
    parts = []
    for item in query.split("&"):
        name, eq, _value = item.partition("=")
        # The raw (still percent-encoded) name is kept as written; only its decoded form is judged.
        parts.append(f"{name}{eq}{MASK}" if eq and sensitive_name(unquote(name)) else item)
    return "&".join(parts)


def mask_url(url: str | httpx.URL, keep_query: bool = True) -> str:
    """The URL with its userinfo (user and password: either can be a token) masked, and the value of
    every sensitive query parameter; without the query at all when ``keep_query`` is false.
    A fragment is dropped: it never reaches a server, and it can hold an OAuth token too."""
    try:
        parts = urlsplit(str(url))
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rpartition("@")[2]
    query = _mask_query(parts.query) if keep_query else ("..." if parts.query else "")
    return parts._replace(netloc=netloc, query=query, fragment="").geturl()


def mask_text(text: str) -> str:
    """Every URL inside ``text`` masked (an error message, a log line); text without one is returned
    as is, so this is cheap on the common path."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda found: mask_url(found.group(0)), text)


def mask_headers(headers: Mapping[str, Any], mask: str = MASK) -> dict[str, str]:
    return {str(name): mask if sensitive_name(str(name)) else str(value) for name, value in headers.items()}


def mask_value(value: Any) -> Any:
    """URLs masked in a JSON-like value (an audit detail), whatever its nesting; headers-like dicts
    also lose the values of their sensitive keys."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: MASK if isinstance(k, str) and sensitive_name(k) and isinstance(v, str) else mask_value(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [mask_value(v) for v in value]
    return value


def _masked_arg(arg: Any) -> Any:
    if isinstance(arg, str):
        return mask_text(arg)
    if isinstance(arg, httpx.URL):  # httpx's own request log passes the URL object
        return mask_text(str(arg))
    return arg


_installed = False


def install_log_masking() -> None:
    """Mask URLs in every log record of the process, whoever logs it (httpx logs each request URL at
    INFO). A record factory rather than a handler filter: it applies before any handler, so also to
    handlers added later (uvicorn's, Celery's, pytest's caplog). Idempotent."""
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if isinstance(record.msg, str):
            record.msg = mask_text(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_masked_arg(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _masked_arg(arg) for key, arg in record.args.items()}
        return record

    logging.setLogRecordFactory(factory)
