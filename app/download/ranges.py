"""Range / If-Range handling, a faithful port of nginx's ``ngx_http_range_filter_module`` (1.22).

The Go supernode's pieces were served by stock nginx, so edge cases follow nginx (probed against
nginx 1.22.1), not aiohttp/RFC taste: a syntax error after ``bytes=`` is 416 (not ignored), a non-``bytes``
unit or a too short value is ignored (200), ``bytes=-0`` is 416, and a range starting at 0 of an empty
file is 200 with an empty body. Multi-range requests behave like nginx with ``max_ranges 1``: one
satisfiable range is served as a single 206, two or more give 200 with the whole file (no multipart;
dfget never asks for it).
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parsedate_to_datetime

_MAX_OFF_T = 2**63 - 1
_DIGITS = frozenset("0123456789")


@dataclass(frozen=True, slots=True)
class Whole:
    """Send the whole file with 200."""


@dataclass(frozen=True, slots=True)
class Partial:
    start: int
    stop: int  # exclusive


@dataclass(frozen=True, slots=True)
class Unsatisfiable:
    """416 with ``Content-Range: bytes */size``."""


Decision = Whole | Partial | Unsatisfiable
WHOLE = Whole()
UNSATISFIABLE = Unsatisfiable()


def etag_for(mtime: float, size: int) -> str:
    """nginx's strong ETag, quotes included: ``"<mtime seconds hex>-<size hex>"``."""
    return f'"{int(mtime):x}-{size:x}"'


def if_range_allows(if_range: str, etag: str, mtime: float) -> bool:
    # nginx treats a value ending in a quote as an entity tag (strong, byte-exact) and anything
    # else as a date that must equal Last-Modified to the second; any mismatch means "send all".
    if len(if_range) >= 2 and if_range.endswith('"'):
        return if_range == etag
    try:
        return int(parsedate_to_datetime(if_range).timestamp()) == int(mtime)
    except (TypeError, ValueError, IndexError, OverflowError):
        return False


def decide(range_header: str | None, size: int, max_ranges: int = 1) -> Decision:
    if range_header is None or len(range_header) < 7 or range_header[:6].lower() != "bytes=":
        return WHOLE
    return _parse(range_header, 6, size, max_ranges)


def _parse(text: str, pos: int, size: int, max_ranges: int) -> Decision:
    # Mirrors ngx_http_range_parse() step by step (including where it tolerates spaces), so the
    # end-of-string sentinel "" plays the role of nginx's NUL terminator.
    def at(i: int) -> str:
        return text[i] if i < len(text) else ""

    def number(i: int) -> tuple[int, int] | None:
        value = 0
        while at(i) in _DIGITS:
            value = value * 10 + ord(text[i]) - 48
            if value > _MAX_OFF_T:
                return None
            i += 1
        return value, i

    found: list[Partial] = []
    total = 0
    left = max_ranges
    p = pos
    while True:
        start = end = 0
        suffix = False
        while at(p) == " ":
            p += 1
        open_ended = False
        if at(p) != "-":
            if at(p) not in _DIGITS:
                return UNSATISFIABLE
            parsed = number(p)
            if parsed is None:
                return UNSATISFIABLE
            start, p = parsed
            while at(p) == " ":
                p += 1
            if at(p) != "-":
                return UNSATISFIABLE
            p += 1
            while at(p) == " ":
                p += 1
            if at(p) in (",", ""):
                end = size
                open_ended = True
        else:
            suffix = True
            p += 1
        if not open_ended:
            if at(p) not in _DIGITS:
                return UNSATISFIABLE
            parsed = number(p)
            if parsed is None:
                return UNSATISFIABLE
            end, p = parsed
            while at(p) == " ":
                p += 1
            if at(p) not in (",", ""):
                return UNSATISFIABLE
            if suffix:
                start = size - end if end < size else 0
                end = size - 1
            end = size if end >= size else end + 1
        if start < end:
            found.append(Partial(start, end))
            total += end - start
            if left == 0:
                return WHOLE
            left -= 1
        elif start == 0:
            return WHOLE
        if at(p) != ",":
            break
        p += 1
    if not found:
        return UNSATISFIABLE
    if total > size or len(found) > 1:
        # nginx would build multipart/byteranges here; with max_ranges 1 it never gets this far.
        return WHOLE
    return found[0]
