"""``DF_LOG_FORMAT=json``: one JSON object per line on stderr, for log pipelines (Loki, Elasticsearch)
that index fields instead of parsing text.

Every record has ``ts`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``, ``msg``; a record logged
while a request is served has its ``request_id`` (the X-Request-Id the response carries, see
app/api/requestid.py); an exception adds ``exc``. Messages are masked by the record factory of
app/core/masking.py and once more here (a record made before the factory was installed, a message built
from an object whose str() holds a URL); so is the traceback, since an exception's message may quote one.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

from app.core.masking import install_log_masking, mask_text

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("df_request_id", default=None)

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        ms = int((record.created - seconds) * 1000)
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": mask_text(record.getMessage()),
        }
        rid = request_id.get()
        if rid is not None:
            out["request_id"] = rid
        if record.exc_info:
            out["exc"] = mask_text(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exc"] = mask_text(record.exc_text)
        if record.stack_info:
            out["stack"] = mask_text(record.stack_info)
        # ensure_ascii: a control character or a stray surrogate in a message can never break the line.
        return json.dumps(out, ensure_ascii=True, default=str)


def configure(log_format: str, level: int = logging.INFO) -> None:
    """Set up the root logger of the process (once, at start). Other loggers (uvicorn's with
    ``log_config=None``, aiohttp's, httpx's) propagate to it."""
    install_log_masking()
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings.warn() would write plain text to stderr: log them instead


def uvicorn_log_config(log_format: str) -> dict[str, Any] | None:
    """uvicorn's own logging setup: its default (text) handlers, or none in JSON mode so that its
    records reach the root logger's JSON handler."""
    if log_format == "json":
        return None
    from uvicorn.config import LOGGING_CONFIG

    return LOGGING_CONFIG
