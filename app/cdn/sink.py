"""What the seeder reports to the cluster state while it fills the seed cache.

The Redis-backed implementation lives in ``app.state.store``; the seeder only sees this interface.

What a Redis failover (or a restart from an ``everysec`` AOF) can lose, and why that is safe. Both
keep a prefix of the writes: everything up to some moment, nothing after it. The state only
*announces* what is already durable on the shared disk (pieces fsync'd, with md5s computed from those
bytes), so a lost write never makes a client fetch a wrong piece; it can only make an announcement
disappear, and each one is made again:

* published pieces: the next publication returns fewer pieces than were published, and the seeder
  publishes all of them again; a final report is refused while pieces are missing (seed_finish.lua),
  so a task is never sealed with pieces nobody announces;
* lease renewals: the lease may look expired, a pull starts a new epoch, the old seeder's next write
  is refused and it stops; the new one continues from the pieces on disk (app.cdn.resume);
* the epoch bump or the run's claim of it: the same epoch number may be handed out again; the claim
  (``_seed.lua``) still lets only one run seed it;
* the final report: the task stays RUNNING until its lease lapses, then a pull restarts the seed,
  which finds the finished copy on disk and publishes it after a conditional GET (a cache hit);
* the task itself: the seeder's writes are refused, it stops, and the next registration creates the
  task again; its seed resumes from disk.

Clients meanwhile wait (602) for pieces they are not offered; none is sent back to the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol


@dataclass(frozen=True)
class SeedJob:
    """Everything the seeder needs to know about one task, read from shared state."""

    tid: str
    epoch: int
    raw_url: str
    task_url: str
    headers: dict[str, str] = field(default_factory=dict)
    md5: str = ""
    identifier: str = ""
    http_file_length: int = -1
    piece_size: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class SeedOutcome:
    success: bool
    file_length: int = 0  # framed length on disk
    raw_length: int = 0
    real_md5: str = ""
    piece_total: int = 0
    error: str = ""
    # Source failure classification (see app.cdn.source): "not_found", "auth", "server", "unreachable",
    # "truncated", "length_changed", "md5_mismatch", "storage", "lease_lost", "internal", "forbidden" (the
    # source policy refused a URL or redirect hop, app.cdn.policy), or "" on success.
    reason: str = ""
    # Published from a complete copy already in the seed cache, without a download (counted in
    # app/observability/seedstats.py). Not part of equality: the same result either way.
    cached: bool = field(default=False, compare=False)


# What a seed's final report found: recorded; refused because the state lacks some of the pieces this
# seeder published (a failover lost them: publish them all again, then report again); or refused
# because another seeder owns the task now.
FinishResult = Literal["done", "missing", "lost"]


class SeedSink(Protocol):
    """Implementations ride out outages of their store themselves (while the lease can still hold): a
    ``None``/``False``/``"lost"`` answer always means "stop, this seeder no longer owns the task"."""

    async def pieces_ready(self, tid: str, epoch: int, first: int, md5s: list[str], seeded_bytes: int) -> int | None:
        """Publish pieces ``first..first+len(md5s)-1``, each on disk and fsync'd.

        Returns how many pieces the state lists for the task afterwards. Fewer than ``first + len(md5s)``
        means pieces published earlier were lost (a failover to a replica that had not got them yet):
        the seeder then publishes all it holds again. None: this seeder lost its lease; stop.
        """

    async def heartbeat(self, tid: str, epoch: int) -> bool:
        """Extend this seeder's lease (the first call claims the epoch). False: stop."""

    async def finished(self, tid: str, epoch: int, outcome: SeedOutcome) -> FinishResult: ...
