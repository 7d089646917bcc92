"""dfget's back-source download: plain GET of the raw URL with the user's headers (PROTOCOL §8.8)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from app.swarm.ratelimit import READ_CHUNK, TokenBucket
from app.swarm.store import file_digest, place_file
from app.swarm.wire import headers_to_map


class BackSourceError(Exception):
    pass


async def back_source_download(
    http: httpx.AsyncClient,
    url: str,
    headers: list[str],
    output: Path,
    *,
    md5: str = "",
    bucket: TokenBucket | None = None,
) -> int:
    """Stream ``url`` next to ``output`` and move it into place; returns the byte count.

    Go's default client follows redirects and accepts any status below 400. There is no timeout of
    its own: the caller bounds the whole download (dfget's overall timeout). 1.0.x reads the body through
    its ``--locallimit`` limiter (``bucket``), like its pieces.
    """
    tmp = output.with_name(f".{output.name}.dfget-backsource")
    output.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        async with http.stream(
            "GET", url, headers=headers_to_map(headers), follow_redirects=True, timeout=None
        ) as response:
            if response.status_code >= 400:
                raise BackSourceError(f"source answered {response.status_code}")
            with tmp.open("wb") as handle:
                async for chunk in response.aiter_bytes(READ_CHUNK if bucket else 1 << 20):
                    if bucket is not None:
                        await bucket.take(len(chunk))
                    handle.write(chunk)
                    written += len(chunk)
        if md5 and await asyncio.to_thread(file_digest, tmp, "md5") != md5:  # off the loop, like the finish check
            raise BackSourceError("md5 mismatch after back-source")
        place_file(tmp, output, keep_src=False)
    except httpx.HTTPError as exc:
        raise BackSourceError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        # Also on cancellation (overall timeout): never leave a half file behind.
        tmp.unlink(missing_ok=True)
    return written
