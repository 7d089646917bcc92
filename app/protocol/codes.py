"""Result codes of the legacy 0.3-bridge API (PROTOCOL §3)."""

from enum import IntEnum


class Code(IntEnum):
    SUCCESS = 200
    SYSTEM_ERROR = 500
    PARAM_ERROR = 501
    TARGET_NOT_FOUND = 502
    PEER_FINISH = 600
    PEER_CONTINUE = 601
    PEER_WAIT = 602
    URL_NOT_REACHABLE = 607
    WAIT_AUTH = 609  # registration only: dfget retries the same node after a pause (§3.1)
    PIECE_REPORTED = 611
    PEER_DOWN_REPORTED = 612


class PullStatus(IntEnum):
    """``status`` query values a dfget sends in ``/peer/task`` (§3.3)."""

    START = 700
    RUNNING = 701
    FINISH = 702


class PullResult(IntEnum):
    """``result`` query values a dfget sends in ``/peer/task`` (§3.3)."""

    FAIL = 500
    SUCCESS = 501
    INVALID = 502
    SEMI_SUCCESS = 503
