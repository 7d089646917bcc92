"""Byte-exact request pieces that dfget 0.4.x/1.0.x puts on the wire (PROTOCOL §2.1, §5, §7, §10.2).

Pure functions only, so the unit tests can compare them with the captures without any server.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterable, Mapping, Sequence

# Capture samples/01: fasthttp's default agent name, sent on every supernode request.
SUPERNODE_USER_AGENT = "fasthttp"
# §2.1: no space before ``charset``.
JSON_CONTENT_TYPE = "application/json;charset=utf-8"

_GO_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    # encoding/json escapes these for HTML safety; byte-exact bodies need the same.
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def _go_string(text: str) -> str:
    out = ['"']
    for char in text:
        escaped = _GO_ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif ord(char) < 0x20:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _go_value(value: object) -> str:
    # bool before int: bool is an int subclass in Python.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else str(int(value))
    if isinstance(value, str):
        return _go_string(value)
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_go_string(str(k))}:{_go_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_go_value(v) for v in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__} as Go JSON")


def go_json(value: object) -> bytes:
    """Compact JSON the way Go's ``json.Marshal`` writes it (insertion order, HTML-escaped)."""
    return _go_value(value).encode()


def raw_query(pairs: Sequence[tuple[str, object]]) -> str:
    """``k=v&k=v`` in the given order with no percent-encoding, as dfget builds its GETs (§2.1)."""
    return "&".join(f"{key}={value}" for key, value in pairs)


def register_body(
    *,
    super_node_ip: str,
    raw_url: str,
    task_url: str,
    cid: str,
    ip: str,
    host_name: str,
    port: int,
    path: str,
    version: str,
    md5: str = "",
    identifier: str = "",
    call_system: str = "",
    headers: Sequence[str] = (),
    dfdaemon: bool = False,
    insecure: bool = False,
) -> bytes:
    """``POST /peer/registry`` body; key order = dfget's RegisterRequest struct, omitempty honoured."""
    body: dict[str, object] = {
        "superNodeIp": super_node_ip,
        "rawUrl": raw_url,
        "taskUrl": task_url,
        "cid": cid,
        "ip": ip,
        "hostName": host_name,
        "port": port,
        "path": path,
    }
    if version:
        body["version"] = version
    # dfget sends the identifier only when no md5 was given (§5.1).
    if md5:
        body["md5"] = md5
    elif identifier:
        body["identifier"] = identifier
    if call_system:
        body["callSystem"] = call_system
    if headers:
        body["headers"] = list(headers)
    if dfdaemon:
        body["dfdaemon"] = True
    if insecure:
        body["insecure"] = True
    return go_json(body)


def pull_query(*, src_cid: str, dst_cid: str, range_: str, result: int, status: int, task_id: str) -> str:
    """``/peer/task`` target, field order of dfget's PullPieceTaskRequest (§5.2)."""
    return "/peer/task?" + raw_query(
        [
            ("srcCid", src_cid),
            ("dstCid", dst_cid),
            ("range", range_),
            ("result", result),
            ("status", status),
            ("taskId", task_id),
        ]
    )


def piece_suc_query(*, task_id: str, cid: str, dst_cid: str, piece_range: str) -> str:
    return "/peer/piece/suc?" + raw_query(
        [("taskId", task_id), ("cid", cid), ("dstCid", dst_cid), ("pieceRange", piece_range)]
    )


def piece_error_query(
    *,
    error_type: str,
    src_cid: str,
    dst_cid: str,
    task_id: str,
    dst_ip: str = "",
    range_: str = "",
    real_md5: str = "",
    expected_md5: str = "",
) -> str:
    return "/peer/piece/error?" + raw_query(
        [
            ("errorType", error_type),
            ("srcCid", src_cid),
            ("dstCid", dst_cid),
            ("dstIp", dst_ip),
            ("taskId", task_id),
            ("range", range_),
            ("realMd5", real_md5),
            ("expectedMd5", expected_md5),
        ]
    )


def service_down_query(*, task_id: str, cid: str) -> str:
    return "/peer/service/down?" + raw_query([("taskId", task_id), ("cid", cid)])


def client_finish_query(*, task_file_name: str, task_id: str, cid: str, super_node: str) -> str:
    return "/client/finish?" + raw_query(
        [("taskFileName", task_file_name), ("taskID", task_id), ("cid", cid), ("superNode", super_node)]
    )


def metrics_body(
    *,
    ip: str,
    backsource_reason: int,
    cid: str,
    call_system: str,
    duration: float,
    file_length: int,
    port: int,
    success: bool,
    task_id: str,
) -> bytes:
    """[1.0.x] ``POST /task/metrics``; swagger struct order, zero values omitted (§6.1)."""
    fields: list[tuple[str, object]] = [
        ("IP", ip),
        # strconv.Itoa: "0" is non-empty, so it is always sent.
        ("backsourceReason", str(backsource_reason)),
        ("cID", cid),
        ("callSystem", call_system),
        ("duration", duration),
        ("fileLength", file_length),
        ("port", port),
        ("success", success),
        ("taskId", task_id),
    ]
    return go_json({key: value for key, value in fields if value})


def request_line(method: str, target: str) -> str:
    return f"{method} {target} HTTP/1.1"


def node_host(node: str) -> str:
    """``superNodeIp``: the text before the first ``:`` of a ``--node`` entry (§5.1)."""
    return node.split(":", 1)[0]


def node_base_url(node: str) -> str:
    """dfget defaults the supernode port to 8002 when the entry has none."""
    return f"http://{node}" if ":" in node else f"http://{node}:8002"


# Instances in one process must not share a cid; real dfgets differ by pid.
_SIGN_COUNTER = itertools.count()


def make_sign(now: float | None = None) -> str:
    """``<pid>-<unix seconds, 3 decimals>`` (§7.3), unique per call within this process."""
    pid_like = os.getpid() + next(_SIGN_COUNTER)
    return f"{pid_like}-{time.time() if now is None else now:.3f}"


def make_cid(ip: str, sign: str) -> str:
    return f"{ip}-{sign}"


def task_file_name(output_basename: str, sign: str) -> str:
    return f"{output_basename}-{sign}"


def peer_path(file_name: str) -> str:
    return "/peer/file/" + file_name


def parse_version(version: str) -> tuple[int, int, int]:
    parts = [int(p) if p.isdigit() else 0 for p in version.split(".")[:3]]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


def split_header_flags(headers: Iterable[str], version: tuple[int, int, int]) -> list[str]:
    """dfget < 1.0.1 parses ``--header`` as a string slice: commas split one value into entries."""
    if version >= (1, 0, 1):
        return list(headers)
    out: list[str] = []
    for header in headers:
        out.extend(header.split(","))
    return out


def headers_to_map(headers: Iterable[str]) -> dict[str, str]:
    """Back-source request headers: split at the first ``:``, trim, skip entries without a value."""
    result: dict[str, str] = {}
    for entry in headers:
        name, sep, value = entry.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            continue
        result[name] = f"{result[name]},{value}" if name in result else value
    return result
