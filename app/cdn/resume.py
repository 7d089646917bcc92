"""Resuming a seed that stopped half way (a killed worker, a lost lease) instead of starting over.

A seed records what a resume needs in ``.meta`` as soon as the response headers arrive (length,
ETag, Last-Modified, Accept-Ranges, the id of this download) and appends each piece to ``.journal``
after the piece is fsync'd. The next seed of the task then

1. refuses to resume when anything that names the content differs (:func:`refusal`): task id, URL,
   piece size, md5 or identifier, a length or validators that were never seen, a seed that ended
   (unless its body was merely cut short: then the retry continues it);
2. re-reads the journaled pieces from disk and keeps the leading run whose framing (header, 0x7F
   trailer) and md5 are intact (:func:`find_resume_point`), feeding the whole-file md5 from disk;
3. asks for the rest with ``Range: bytes=<offset>-`` and ``If-Range`` and continues only on a 206
   that starts exactly there and has the same total and validators (:meth:`ResumePoint.mismatch`).
   A 200 means the file changed (or ranges are not served): the seed starts over with that body.

Only pieces the journal lists are trusted: a piece written but not yet fsync'd when the host died may
be torn in the middle while its header and trailer look right.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from app.cdn.sink import SeedJob
from app.cdn.source import SourceResponse, format_http_date
from app.cdn.storage import SeedStorage
from app.protocol.pieces import FRAME_OVERHEAD, frame_header, payload_size

# Failures that say nothing about the pieces already on disk: the body was cut short or stalled.
RESUMABLE_FAILURES = frozenset({"truncated", "unreachable"})


def same_task(meta: dict[str, Any], job: SeedJob) -> bool:
    """§12.3 step 1: same id, taskUrl and piece size, and same md5 (or identifier without md5)."""
    if meta.get("taskID") != job.tid or meta.get("url") != job.task_url:
        return False
    if meta.get("pieceSize") != job.piece_size:
        return False
    if job.md5:
        return bool(meta.get("md5") == job.md5)
    return bool(meta.get("bizId", "") == job.identifier)


def new_download_id() -> str:
    """Ties a journal to the .meta written with it: a journal of another download is never trusted."""
    return secrets.token_hex(8)


def response_fields(source: SourceResponse, download_id: str) -> dict[str, Any]:
    """What .meta records once the (200) response headers are in."""
    return {
        "lastModified": source.last_modified_ms,
        "eTag": source.etag,
        "sourceLength": source.length,
        "acceptRanges": source.accept_ranges,
        "journal": download_id,
    }


@dataclass
class ResumePoint:
    """The durable, verified head of an unfinished seed: where the next request starts."""

    download_id: str
    md5s: list[str]  # pieces 0..k-1, as published
    offset: int  # source bytes they hold: the first byte to ask for
    whole: Any  # hashlib md5 over those bytes, to be continued with the rest of the body
    length: int  # the source length they belong to
    etag: str
    last_modified_ms: int

    @property
    def complete(self) -> bool:
        return self.offset == self.length

    @property
    def if_range(self) -> str:
        # If-Range needs a strong validator: a weak ETag never matches, the date then does better.
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return format_http_date(self.last_modified_ms) if self.last_modified_ms > 0 else self.etag

    def mismatch(self, source: SourceResponse) -> str:
        """Why this answer does not continue our pieces ("" when it does)."""
        if source.status != 206:
            return f"the source answered {source.status} to the range request"
        if source.content_range != (self.offset, self.length - 1, self.length):
            got = source.response.headers.get("content-range", "none")
            return f"Content-Range {got!r} does not continue at {self.offset} of {self.length}"
        if source.length not in (-1, self.length - self.offset):
            return f"Content-Length {source.length} does not match the Content-Range"
        if source.etag and self.etag and source.etag != self.etag:
            return f"ETag changed from {self.etag} to {source.etag}"
        if source.last_modified_ms and self.last_modified_ms and source.last_modified_ms != self.last_modified_ms:
            return "Last-Modified changed"
        return ""


def refusal(meta: dict[str, Any] | None, job: SeedJob) -> str:
    """Why an unfinished seed on disk cannot be continued ("" when it can be tried)."""
    if meta is None:
        return "no earlier seed on disk"
    if not same_task(meta, job):
        return "the task id, URL, piece size, md5 or identifier differ"
    if meta.get("finish") and (meta.get("success") or meta.get("failReason") not in RESUMABLE_FAILURES):
        return "the earlier seed ended"
    length = meta.get("sourceLength")
    if not isinstance(length, int) or length <= 0:
        return "the source length was never known"
    if job.http_file_length not in (-1, length):
        return f"the source length changed from {length} to {job.http_file_length}"
    if not meta.get("eTag") and not meta.get("lastModified"):
        return "the source sent no ETag or Last-Modified"
    if meta.get("acceptRanges") == "none":
        return "the source serves no ranges"
    if any(name.lower() in ("range", "if-range") for name in job.headers):
        return "the task's own headers ask for a range"
    if not isinstance(meta.get("journal"), str) or not meta["journal"]:
        return "no piece journal"
    return ""


def find_resume_point(
    storage: SeedStorage, job: SeedJob, meta: dict[str, Any] | None
) -> tuple[ResumePoint | None, str]:
    """The verified head of the unfinished seed on disk, or (None, why not). Blocking: run in a thread."""
    why = refusal(meta, job)
    if why or meta is None:
        return None, why
    journal = storage.read_journal(job.tid)
    if not journal or journal[0] != meta["journal"]:
        return None, "no piece journal of this download"
    length, piece_size = int(meta["sourceLength"]), job.piece_size
    payload = payload_size(piece_size)
    md5s: list[str] = []
    whole = hashlib.md5()
    buffer = bytearray(piece_size)
    try:
        with open(storage.data_path(job.tid), "rb", buffering=0) as handle:
            for num, line in enumerate(journal[1:]):
                data_len = min(payload, length - num * payload)
                if data_len <= 0:
                    break
                framed = memoryview(buffer)[: data_len + FRAME_OVERHEAD]
                handle.seek(num * piece_size)
                if handle.readinto(framed) != len(framed):
                    break
                if framed[:4] != frame_header(data_len, piece_size) or framed[-1] != 0x7F:
                    break
                md5 = f"{hashlib.md5(framed).hexdigest()}:{len(framed)}"
                if md5 != line:
                    break
                whole.update(framed[4:-1])
                md5s.append(md5)
    except FileNotFoundError:
        return None, "the data file is gone"
    if not md5s:
        return None, "no intact piece on disk"
    offset = min(len(md5s) * payload, length)
    point = ResumePoint(
        download_id=meta["journal"], md5s=md5s, offset=offset, whole=whole, length=length,
        etag=str(meta.get("eTag") or ""), last_modified_ms=int(meta.get("lastModified") or 0),
    )
    return point, ""
