"""Task ids and task URLs, bit-exact with the Go supernode (PROTOCOL §7.1, §7.2, §13.1)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

# The Go supernode's fixed salt; ids must match so that caches and preheats line up.
TASK_ID_KEY = b">I$pg-~AS~sP'rqu_`Oh&lz#9]\"=;nE%"


def task_id(task_url: str, md5: str = "", identifier: str = "", headers: Mapping[str, str] | None = None) -> str:
    """sha256(KEY + taskUrl + sign [+ headers["Range"]] + KEY) as 64 lowercase hex chars.

    ``sign`` is the md5 if given, else the identifier. The ``Range`` lookup is case-sensitive,
    as in dfget 1.0.1+ (other headers never influence the id).
    """
    sign = md5 or identifier or ""
    digest = hashlib.sha256()
    digest.update(TASK_ID_KEY)
    digest.update(task_url.encode())
    digest.update(sign.encode())
    if headers and "Range" in headers:
        digest.update(headers["Range"].encode())
    digest.update(TASK_ID_KEY)
    return digest.hexdigest()


def filter_url_params(url: str, filters: Iterable[str]) -> str:
    """Drop the named query parameters, keeping order and encoding (dfget's ``-f``)."""
    names = {name for name in filters if name}
    if not names or "?" not in url:
        return url
    base, query = url.split("?", 1)
    if not query.strip():
        return url
    kept = [part for part in query.split("&") if part.split("=", 1)[0] not in names]
    if not kept:
        return base
    return base + "?" + "&".join(kept)


def cdn_path(tid: str) -> str:
    """URL path of the framed seed file on the download port (§9.4)."""
    return f"/download/{tid[:3]}/{tid}"
