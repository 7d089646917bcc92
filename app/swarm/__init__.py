"""A dfget 0.4.x/1.0.x emulator for driving real swarms against a supernode on loopback.

* ``Uploader``: the dfget peer server (re-frames raw data files, PROTOCOL §10).
* ``Dfget``: one dfget download (register, pull loop, piece fetches, reports, migration, back-source).
* ``Swarm`` / ``run_swarm``: N peers with their own uploaders, node lists rotated per peer.
"""

from app.swarm.api import Exchange, make_http_client
from app.swarm.client import Dfget
from app.swarm.merge import Item, ItemMerger
from app.swarm.result import DfgetResult, PieceFetch
from app.swarm.swarm import Swarm, SwarmPeer, loopback_ip, rotated, run_swarm
from app.swarm.uploader import Uploader

__all__ = [
    "Dfget",
    "DfgetResult",
    "Exchange",
    "Item",
    "ItemMerger",
    "PieceFetch",
    "Swarm",
    "SwarmPeer",
    "Uploader",
    "loopback_ip",
    "make_http_client",
    "rotated",
    "run_swarm",
]
