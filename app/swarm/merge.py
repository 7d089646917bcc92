"""dfget's work-queue items and the merge policy of its single puller (PROTOCOL §8.3, §8.5).

Kept free of I/O so the policy that decides which outcomes the supernode ever sees can be unit tested.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from app.protocol.codes import PullResult, PullStatus

# Results that are never merged away: explicit success (unused by dfget), failure and START's "invalid".
_UNMERGED_RESULTS = frozenset({PullResult.SUCCESS, PullResult.FAIL, PullResult.INVALID})
_SUCCESS_RESULTS = frozenset({PullResult.SEMI_SUCCESS, PullResult.SUCCESS})


@dataclass(frozen=True)
class Item:
    """One entry of dfget's main queue: the START marker or a piece outcome to report in a pull."""

    status: int
    result: int
    node: str
    task_id: str
    range: str = ""
    dst_cid: str = ""
    # Only set on outcomes of real downloads; 0 means "not tied to a piece size" (§8.5 restart check).
    piece_size: int = 0

    @classmethod
    def start(cls, node: str, task_id: str) -> Item:
        return cls(status=PullStatus.START, result=PullResult.INVALID, node=node, task_id=task_id)


class ItemMerger:
    """The ``pieceSet`` + ``getItem`` logic of dfget's p2p downloader.

    ``pieces`` maps a range to False while it downloads and True once its success was dequeued.
    ``take`` is called with the item just polled (None when the 2 s poll timed out) and returns the
    item to send, or None to keep polling. A success is held back ("latest") while more items are
    queued or more than two pieces are still downloading; a newer item replaces it.
    """

    def __init__(self) -> None:
        self.pieces: dict[str, bool] = {}
        self.held: Item | None = None
        self.dropped: list[Item] = []

    def running_count(self) -> int:
        return sum(1 for done in self.pieces.values() if not done)

    def is_done(self, range_: str) -> bool:
        return self.pieces.get(range_) is True

    def is_known(self, range_: str) -> bool:
        return range_ in self.pieces

    def mark_running(self, range_: str) -> None:
        self.pieces[range_] = False

    def reset(self) -> None:
        """A migration changed the piece size: all local progress is discarded."""
        self.pieces.clear()

    def take(self, item: Item | None, queued: int, *, node: str, task_id: str, piece_size: int) -> Item | None:
        need_merge = True
        if item is not None:
            if item.piece_size and item.piece_size != piece_size:
                self.dropped.append(item)
                return None
            if item.node != node:
                # Outcomes from before a migration go to the new node without a source cid.
                item = replace(item, dst_cid="", node=node, task_id=task_id)
            if item.range:
                state = self.pieces.get(item.range)
                if state is None:
                    self.dropped.append(item)
                    return None
                if not state and item.result in _SUCCESS_RESULTS:
                    self.pieces[item.range] = True
                elif not state:
                    # A failed piece becomes available again for the next 601.
                    del self.pieces[item.range]
            self.held = item
        else:
            need_merge = False
        if self.held is None:
            return None
        if self.held.result in _UNMERGED_RESULTS:
            need_merge = False
        if need_merge and (queued > 0 or self.running_count() > 2):
            return None
        chosen, self.held = self.held, None
        return chosen
