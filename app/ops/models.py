"""Response shapes of the operator views (``/api/v1/overview``, ``/api/v1/tasks/{id}/swarm``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.cluster.models import ClusterView
from app.limits.views import LimitValues
from app.state.traffic import Traffic
from app.tasks.models import TaskPage, TaskView


class TrafficView(BaseModel):
    """Bytes clients received, by source class (app/state/traffic.py)."""

    peer: int = Field(description="Pieces fetched from other dfget peers (framed bytes).")
    seed: int = Field(description="Pieces fetched from the seed cache (framed bytes).")
    source: int = Field(description="Back-to-source downloads reported by dfget 1.0.x (/task/metrics); "
                                    "0.4.x clients never report theirs.")

    @classmethod
    def of(cls, traffic: Traffic) -> TrafficView:
        return cls(peer=traffic.peer, seed=traffic.seed, source=traffic.source)


class TrafficPoint(TrafficView):
    start: int = Field(description="Start of the minute, epoch seconds.")


class TrafficSummary(BaseModel):
    total: TrafficView = Field(description="Since the cluster state was created.")
    window: TrafficView = Field(description="In the last `minutes` minutes.")
    minutes: int
    p2pRatio: float | None = Field(None, description="peer / all bytes in the window; null without traffic.")
    history: list[TrafficPoint] = Field(description="Per minute, oldest first (the last one is partial).")


class ReplicaAge(BaseModel):
    id: str
    heartbeatAgeSeconds: float | None = Field(None, description="Seconds since its last heartbeat.")


class Totals(BaseModel):
    tasks: int = Field(description="Tasks with state in Redis.")
    activeTasks: int = Field(description="Tasks registered or pulled in the window.")
    tasksByStatus: dict[str, int] = Field(description="Tasks by cdnStatus.")
    peers: int = Field(description="Peer records (one per registration, /api/v1/peers).")
    preheatsByStatus: dict[str, int]


class Overview(BaseModel):
    cluster: ClusterView
    replicaAges: list[ReplicaAge]
    totals: Totals
    traffic: TrafficSummary
    limits: LimitValues


class TaskPeer(BaseModel):
    cid: str
    peerId: str | None = None
    ip: str | None = None
    port: int | None = None
    hostName: str | None = None
    version: str | None = None
    status: str | None = Field(None, description="WAITING, RUNNING, SUCCESS or FAILED (dfget's own report).")
    down: bool = Field(False, description="Sent service/down, or its uploader lost the file.")
    piecesDone: int = Field(description="Pieces the cluster knows it has.")
    percent: float | None = Field(None, description="piecesDone / pieceTotal × 100 when the total is known.")
    servedPieces: int = 0
    servedBytes: int = Field(0, description="Framed bytes other peers fetched from it.")
    clientErrors: int = Field(0, description="Failed piece fetches it reported (since its last success).")
    servingErrors: int = Field(0, description="Failed fetches from it that others reported.")


class PieceMap(BaseModel):
    pieceTotal: int
    offset: int
    seeded: list[bool] = Field(description="Per piece from offset: the seed cache holds it.")
    holders: list[int] = Field(description="Per piece from offset: how many peers reported having it.")


class TaskSwarm(BaseModel):
    taskId: str
    traffic: TrafficView
    pieceMap: PieceMap
    peersTotal: int
    peersRunning: int
    peersDone: int
    peers: list[TaskPeer] = Field(description="A page of the task's peers, by cid.")


class TaskRowExtras(BaseModel):
    """What the task list adds to each task for operators (issue 8)."""

    peersRunning: int = Field(0, description="Peers registered and still downloading (not gone down).")
    peersDone: int = Field(0, description="Peers that finished the download.")
    traffic: TrafficView | None = Field(None, description="Bytes its clients received, by source class.")


class TaskRow(TaskView, TaskRowExtras):
    pass


class TaskRowPage(TaskPage):
    tasks: list[TaskRow] = Field(description="Most recently accessed first.")  # type: ignore[assignment]
