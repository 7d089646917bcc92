"""Peers (PROTOCOL §6.2): ``/peers`` as v0.4.x/v1.0.0 served it (samples/14) and ``/api/v1/peers`` as
v1.0.1+ did, the latter with each peer's current tasks and bytes served added."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import ValidationError
from starlette.responses import Response

from app.api.admin_audit import audit_admin
from app.api.auth import Admin, Reader
from app.api.bodies import json_object
from app.api.errors import ERRORS, NOT_FOUND
from app.api.responses import JSONBytes
from app.peers.models import PEER_CREATE_BODY, PeerCreate, PeerCreated, PeerInfo, PeerView
from app.peers.service import PeerService, paginate, peer_info

router = APIRouter(tags=["peers"], responses=ERRORS)

LEGACY, V1 = "/peers", "/api/v1/peers"


async def get_peers(request: Request) -> PeerService:
    return PeerService(request.app.state.redis, request.app.state.settings)


Peers = Annotated[PeerService, Depends(get_peers)]
PeerId = Annotated[str, Path(alias="id", min_length=1, max_length=512)]
PageNum = Annotated[int, Query(alias="pageNum", ge=0, le=1_000_000_000)]
# Paginated by default: 5,010 peers once made a 40 MB answer. Go's "pageSize 0 = all" becomes the default page.
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 100, 1000
PageSize = Annotated[int, Query(alias="pageSize", ge=0, le=MAX_PAGE_SIZE,
                                description=f"Peers per page; 0 or absent = {DEFAULT_PAGE_SIZE}.")]
SortKey = Annotated[str | None, Query(alias="sortKey", max_length=64, description="Ignored, as in Go.")]
SortDirect = Annotated[
    str, Query(alias="sortDirect", pattern="^(?i:asc|desc)$", description="By creation time: ASC or DESC.")
]


def _not_found(peer_id: str) -> HTTPException:
    # Go answered HTTP 500 (inner code 502) for an unknown peer; a 404 says what happened.
    return HTTPException(404, f"peer {peer_id} not found")


async def _page(peers: PeerService, page_num: int, page_size: int, sort_direct: str) -> list[dict[str, Any]]:
    return paginate(await peers.records(), page_num, page_size or DEFAULT_PAGE_SIZE, sort_direct.upper() == "DESC")


@router.get(LEGACY, response_model=list[PeerInfo], response_model_exclude_none=True)
async def list_peers_legacy(
    _: Reader, peers: Peers, page_num: PageNum = 0, page_size: PageSize = 0, sort_key: SortKey = None,
    sort_direct: SortDirect = "ASC",
) -> list[PeerInfo]:
    """PeerInfo array, oldest first by default (the seed cache's own peer included)."""
    return [peer_info(record) for record in await _page(peers, page_num, page_size, sort_direct)]


@router.get(V1, response_model=list[PeerView], response_model_exclude_none=True)
async def list_peers(
    _: Reader, peers: Peers, page_num: PageNum = 0, page_size: PageSize = 0, sort_key: SortKey = None,
    sort_direct: SortDirect = "ASC",
) -> list[PeerView]:
    """PeerInfo plus each peer's current tasks and the bytes it served to other peers."""
    return await peers.views(await _page(peers, page_num, page_size, sort_direct))


def _or(value: Any, zero: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and isinstance(zero, int):
        return int(value)  # 16131.0 is an integer to JSON Schema, so it is one here too
    return zero if value is None else value


async def _create(request: Request, actor: str, peers: PeerService) -> JSONBytes:
    raw = await request.body()
    fields = json_object(raw)
    try:
        # The last spelling of a key wins, as in Go; every other spelling present must be valid as well.
        for key, value in orjson.loads(raw or b"{}").items():  # json_object checked it is an object
            if key.lower() in _FIELDS:
                _validated({**fields, key.lower(): value})
        body = _validated(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise HTTPException(400, problems) from None
    peer_id = await peers.create(body)
    await audit_admin(request, actor, "peer.created", target=peer_id, detail={"ip": body.ip, "port": body.port})
    return JSONBytes({"ID": peer_id}, status_code=201)


_FIELDS = ("ip", "hostname", "port", "version")


def _validated(fields: dict[str, Any]) -> PeerCreate:
    return PeerCreate.model_validate(
        # null is Go's zero value; anything else of the wrong type is refused (``"version": {}`` was not).
        {"ip": fields.get("ip"), "hostname": fields.get("hostname"), "port": _or(fields.get("port"), 0),
         "version": _or(fields.get("version"), "")},
        strict=True,  # as Go's decoder: "20000" is not a port, nor true
    )


@router.post(LEGACY, status_code=201, response_model=PeerCreated, openapi_extra={"requestBody": PEER_CREATE_BODY})
async def create_peer_legacy(request: Request, actor: Admin, peers: Peers) -> JSONBytes:
    """Register a peer by hand: 201 ``{"ID":"<hostName>-<IP>-<unixnanos>"}``; keys in any case."""
    return await _create(request, actor, peers)


@router.post(V1, status_code=201, response_model=PeerCreated, openapi_extra={"requestBody": PEER_CREATE_BODY})
async def create_peer(request: Request, actor: Admin, peers: Peers) -> JSONBytes:
    """Register a peer by hand: 201 ``{"ID":"<hostName>-<IP>-<unixnanos>"}``; keys in any case."""
    return await _create(request, actor, peers)


@router.get(LEGACY + "/{id}", response_model=PeerInfo, response_model_exclude_none=True, responses=NOT_FOUND)
async def get_peer_legacy(_: Reader, peers: Peers, peer_id: PeerId) -> PeerInfo:
    record = await peers.get(peer_id)
    if record is None:
        raise _not_found(peer_id)
    return peer_info(record)


@router.get(V1 + "/{id}", response_model=PeerView, response_model_exclude_none=True, responses=NOT_FOUND)
async def get_peer(_: Reader, peers: Peers, peer_id: PeerId) -> PeerView:
    record = await peers.get(peer_id)
    if record is None:
        raise _not_found(peer_id)
    return (await peers.views([record]))[0]


async def _delete(request: Request, actor: str, peers: PeerService, peer_id: str) -> Response:
    if not await peers.delete(peer_id):
        raise _not_found(peer_id)
    await audit_admin(request, actor, "peer.deleted", target=peer_id)
    return Response(status_code=200)


@router.delete(LEGACY + "/{id}", response_class=Response, responses=NOT_FOUND)
async def delete_peer_legacy(request: Request, actor: Admin, peers: Peers, peer_id: PeerId) -> Response:
    """Forget a peer record: 200, empty body (the dfget-task state of its download is not touched)."""
    return await _delete(request, actor, peers, peer_id)


@router.delete(V1 + "/{id}", response_class=Response, responses=NOT_FOUND)
async def delete_peer(request: Request, actor: Admin, peers: Peers, peer_id: PeerId) -> Response:
    """Forget a peer record: 200, empty body (the dfget-task state of its download is not touched)."""
    return await _delete(request, actor, peers, peer_id)
