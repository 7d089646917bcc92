"""dfget's registration loop and node-list handling (PROTOCOL §5.1).

Both node-list rules come down to one list of entries consumed front to back: every registration
attempt (successful or not) uses up the entries up to the one it tried, and a migration continues
with what is left. When nothing is left, the migration fails and dfget goes back to the source.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.swarm.api import ApiResponse, SupernodeApi, go_struct
from app.swarm.config import VersionTraits
from app.swarm.result import DfgetResult

CODE_SUCCESS = 200
CODE_URL_NOT_REACHABLE = 607
CODE_NEED_AUTH = 608
CODE_WAIT_AUTH = 609
_WAIT_AUTH_RETRIES = 3
_REGISTER_DATA = {"taskId": str, "fileLength": int, "pieceSize": int, "cdnSource": str}


@dataclass(frozen=True)
class Registration:
    node: str
    task_id: str
    file_length: int
    piece_size: int
    cdn_source: str = ""


class RegisterFailed(Exception):
    """No node accepted the registration; ``code`` is the last result code (608 forbids back-source)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def adjust_node_list(
    nodes: Sequence[str], *, shuffle: bool, rng: random.Random, duplicate: bool = True
) -> list[str]:
    """The entries a dfget registers with, in order.

    ``duplicate`` (dfget ≤ 1.0.4, ``adjustSupernodeList``): one node becomes [n, n]; several are
    (shuffled and) listed twice. dfget 1.0.5+ (``duplicate=False``) lists every entry once (its locator
    shuffles them) and never registers again with the entry it last used, so N entries allow N−1
    migrations: ``--node VIP,VIP,VIP`` gives two. ``shuffle=False`` keeps the order for tests.
    """
    listed = list(nodes)
    if shuffle:
        rng.shuffle(listed)
    if not duplicate:
        return listed
    if len(listed) <= 1:
        return listed * 2
    return listed + listed


class Registrar:
    """Registers with the remaining nodes; every success consumes the list up to the node used."""

    def __init__(
        self,
        api: SupernodeApi,
        nodes: list[str],
        body_for: Callable[[str], bytes],
        traits: VersionTraits,
        result: DfgetResult,
        *,
        sleep_scale: float = 1.0,
    ) -> None:
        self.api = api
        self.remaining = nodes
        self._body_for = body_for
        self._traits = traits
        self._result = result
        self._sleep_scale = sleep_scale

    async def register(self) -> Registration:
        nodes = self.remaining
        last: ApiResponse | None = None
        chosen: Registration | None = None
        index, wait_auth = 0, 0
        while index < len(nodes):
            node = nodes[index]
            last = await self.api.post_json(node, "/peer/registry", self._body_for(node))
            self._result.register_attempts += 1
            code = last.code
            if code == CODE_SUCCESS:
                try:
                    chosen = self._decode(node, last)
                except TypeError as exc:
                    # A body dfget cannot decode counts as a transport error: next node.
                    self._result.protocol_errors.append(f"POST /peer/registry on {node}: {exc}")
                    last = ApiResponse(http_status=None, error=str(exc))
                    index += 1
                    continue
                break
            if code == CODE_NEED_AUTH or (code == CODE_URL_NOT_REACHABLE and self._traits.stops_on_607):
                break
            if code == CODE_WAIT_AUTH and wait_auth < _WAIT_AUTH_RETRIES:
                wait_auth += 1
                await asyncio.sleep(self._traits.wait_auth_sleep * self._sleep_scale)
                continue
            index += 1
        self.remaining = nodes[index + 1 :] if index < len(nodes) else []
        if last is None:
            raise RegisterFailed("no supernode left to register with")
        if last.code is None:
            raise RegisterFailed(f"register failed: {last.error}")
        if last.code != CODE_SUCCESS:
            detail = f": {last.msg}" if last.msg else ""
            raise RegisterFailed(f"register answered code {last.code}{detail}", last.code)
        if chosen is None:
            # dfget dereferences the absent data and panics; the panic becomes a register failure.
            raise RegisterFailed("register answered 200 without data", CODE_SUCCESS)
        self._result.registrations += 1
        return chosen

    @staticmethod
    def _decode(node: str, response: ApiResponse) -> Registration | None:
        if response.data is None:
            return None
        data = go_struct(response.data, _REGISTER_DATA)
        return Registration(
            node=node,
            task_id=str(data["taskId"]),
            file_length=int(data["fileLength"]),
            piece_size=int(data["pieceSize"]),
            cdn_source=str(data["cdnSource"]),
        )
