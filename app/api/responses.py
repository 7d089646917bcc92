"""Response helpers: orjson bodies with the exact content types the legacy clients saw."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class JSONBytes(JSONResponse):
    """A JSONResponse (so that FastAPI documents its body as JSON, not as a string) rendered by orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
