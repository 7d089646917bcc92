"""Parses the captured exchanges of ``shared/protocol/samples`` into test vectors.

The captures are copied into ``tests/vectors/samples`` so that a clone tests on its own, wherever it
is checked out; test_samples_replay checks the copy against ``../shared/protocol`` when that is there."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import orjson

SAMPLES = Path(__file__).resolve().parent / "vectors" / "samples"
SHARED_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "protocol" / "samples"
_SEPARATOR = re.compile(r"^={20,}$", re.M)


@dataclass
class Exchange:
    method: str
    target: str
    request_headers: dict[str, str] = field(default_factory=dict)
    request_body: bytes = b""
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""

    def response_json(self) -> object:
        return orjson.loads(self.response_body)


def _headers_and_body(block: str) -> tuple[str, dict[str, str], bytes]:
    head, _, body = block.strip("\n").partition("\n\n")
    first, *lines = head.splitlines()
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = body.strip()
    if body == "(empty body)" or body.startswith("(binary body"):
        body = ""
    return first, headers, body.encode()


def load(name: str) -> list[Exchange]:
    text = (SAMPLES / name).read_text()
    exchanges = []
    for chunk in _SEPARATOR.split(text)[1:]:
        _, _, rest = chunk.partition("--- request ---\n")
        request, _, response = rest.partition("--- response")
        response = response.split("---\n", 1)[1]
        request_line, request_headers, request_body = _headers_and_body(request)
        status_line, response_headers, response_body = _headers_and_body(response)
        method, target, _ = request_line.split(" ", 2)
        exchanges.append(
            Exchange(method, target, request_headers, request_body, int(status_line.split()[1]), response_headers,
                     response_body)
        )
    return exchanges


def shape(value: object) -> object:
    """Field names and JSON types, recursively: what a Go client's decoder depends on."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__
