"""Piece download throughput: our server (``python -m app.download``) vs nginx on the same files.

Both serve one framed seed file from the same storage directory on 127.0.0.1; ``wrk`` (a C client,
so the client is not the bottleneck) sends dfget-like ``Range`` requests for whole 4 MiB pieces,
rotating over the pieces. Before timing, a parity pass compares status, headers and body hashes of
both servers for a table of Range edge cases. One JSON line is printed per run.

    apt-get install -y nginx wrk
    .venv/bin/python benchmarks/bench_download.py [--duration 10] [--connections 4 8]

Not a test: it spawns processes, which it always stops, and removes its temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.cdn.storage import LocalSeedStorage  # noqa: E402
from app.protocol.pieces import frame_piece, payload_size  # noqa: E402

PIECE = 4 * 1024 * 1024
TID = "722b477b471e3c784f4cdd0acfe6483e958412923283f9e7d8598ce3436e9854"
PATH = f"/download/{TID[:3]}/{TID}"
HOST = "127.0.0.1"

NGINX_CONF = """daemon off;
worker_processes {workers};
pid {run}/nginx.pid;
error_log {run}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    default_type application/octet-stream;
    sendfile on;
    server {{
        listen {host}:{port};
        location / {{ root {root}; }}
    }}
}}
"""

WRK_SCRIPT = """
local piece, pieces, counter = %(piece)d, %(pieces)d, 0
local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
function init(args)
  counter = id * 7
end
function request()
  local n = counter %% pieces
  counter = counter + 1
  local s = n * piece
  return wrk.format("GET", nil, {
    ["Range"] = "bytes=" .. s .. "-" .. (s + piece - 1),
    ["Piecenum"] = tostring(n), ["Piecesize"] = tostring(piece), ["User-Agent"] = "dfget/0.4.1",
  })
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"bytes":%%d,"duration_us":%%d,"errors":%%d,"p50_ms":%%.3f,"p99_ms":%%.3f}\\n',
    summary.requests, summary.bytes, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""

# Range edge cases for the parity pass: (Range, If-Range); None = header absent.
PARITY_CASES: list[tuple[str | None, str | None]] = [
    (None, None),
    (f"bytes={PIECE}-{2 * PIECE - 1}", None),
    ("bytes=0-", None),
    ("bytes=-10", None),
    ("bytes=-0", None),
    ("bytes=abc", None),
    ("bytes=5-3", None),
    ("items=0-5", None),
    ("BYTES=0-9", None),
    ("bytes= 0 - 9", None),
    ("bytes=0-9,20-29", None),
    ("bytes=0-9,999999999999-", None),
    ("bytes=", None),
    ("bytes=-", None),
    ("bytes=99999999999999999999-", None),
    ("bytes=0-9", '"bogus"'),
    ("bytes=0-9", "Sat, 01 Jan 2000 00:00:00 GMT"),
]
COMPARED_HEADERS = ("content-length", "content-range", "content-type", "etag", "last-modified")


@dataclass
class Target:
    name: str
    port: int
    process: subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def build_seed(base: Path, pieces: int) -> tuple[bytes, int]:
    """Framed file of ``pieces`` full pieces plus a short last one; returns it and the full count."""
    storage = LocalSeedStorage(base)
    step = payload_size(PIECE)
    framed = b"".join(frame_piece(os.urandom(step), PIECE) for _ in range(pieces))
    framed += frame_piece(os.urandom(1000), PIECE)
    path = storage.data_path(TID)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(framed)
    for directory in (base.parent, base, base / "download", path.parent):
        # nginx workers drop root privileges (to nobody) and must be able to reach the file.
        os.chmod(directory, 0o755)
    return framed, pieces


def request(port: int, method: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request(method, PATH, headers=headers)
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(OSError):
            if request(port, "HEAD", {})[0] == 200:
                return
        time.sleep(0.05)
    raise RuntimeError("server did not become ready")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # both exit (nginx: fast shutdown) on TERM
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextlib.contextmanager
def ours(base: Path, name: str = "ours", uvloop: bool = False, nosendfile: bool = False) -> Iterator[Target]:
    port = free_port()
    env = {**os.environ, "DF_SEED_DIR": str(base), "DF_LISTEN": HOST, "DF_DOWNLOAD_PORT": str(port)}
    env.pop("AIOHTTP_NOSENDFILE", None)
    if nosendfile:
        env["AIOHTTP_NOSENDFILE"] = "1"
    if uvloop:
        # What happens if the server shares a uvicorn process that runs uvloop.
        code = "import uvloop, app.download.__main__ as m; uvloop.run(m._serve())"
        argv = [sys.executable, "-c", code]
    else:
        argv = [sys.executable, "-m", "app.download"]
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(port, process)
        yield Target(name, port, process)
    finally:
        stop(process)


@contextlib.contextmanager
def nginx(base: Path, run: Path, workers: int) -> Iterator[Target]:
    port = free_port()
    run.mkdir(parents=True, exist_ok=True)
    conf = run / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workers=workers, run=run, host=HOST, port=port, root=base))
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    process = subprocess.Popen(
        [binary, "-c", str(conf), "-p", str(run)], stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_ready(port, process)
        yield Target(f"nginx-{workers}w", port, process)
    finally:
        stop(process)


def parity(mine: Target, theirs: Target) -> dict[str, object]:
    diffs = []
    for method in ("GET", "HEAD"):
        for range_value, if_range in PARITY_CASES:
            headers = {"User-Agent": "dfget/0.4.1"}
            if range_value is not None:
                headers["Range"] = range_value
            if if_range is not None:
                headers["If-Range"] = if_range
            answers = []
            for target in (mine, theirs):
                status, reply_headers, body = request(target.port, method, headers)
                kept = {k: reply_headers.get(k) for k in COMPARED_HEADERS}
                if status >= 400:  # error pages differ on purpose (nginx: HTML, ours: text)
                    kept = {"content-range": kept["content-range"]}
                digest = hashlib.sha256(body).hexdigest()[:16] if status < 400 else "-"
                answers.append((status, kept, digest))
            if answers[0] != answers[1]:
                diffs.append(
                    {
                        "method": method,
                        "range": range_value,
                        "if_range": if_range,
                        "ours": answers[0],
                        "nginx": answers[1],
                    }
                )
    return {"parity_cases": 2 * len(PARITY_CASES), "diffs": diffs}


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process and its descendants (nginx workers are the master's children)."""
    total = 0.0
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += cpu_seconds(int(child))
    return total


def run_wrk(target: Target, pieces: int, connections: int, duration: int, script: Path) -> dict[str, Any]:
    script.write_text(WRK_SCRIPT % {"piece": PIECE, "pieces": pieces})
    url = f"http://{HOST}:{target.port}{PATH}"
    argv = ["wrk", f"-t{min(connections, 2)}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s"]
    cpu_before = cpu_seconds(target.process.pid)
    completed = subprocess.run(
        [*argv, "-s", str(script), url], capture_output=True, text=True, timeout=duration + 60, check=True
    )
    server_cpu = cpu_seconds(target.process.pid) - cpu_before
    line = next(x for x in completed.stdout.splitlines() if x.startswith("WRKJSON "))
    stats = json.loads(line.removeprefix("WRKJSON "))
    seconds = stats["duration_us"] / 1e6
    body_bytes = stats["requests"] * PIECE
    return {
        "server": target.name,
        "connections": connections,
        "seconds": round(seconds, 2),
        "requests": stats["requests"],
        "errors": stats["errors"],
        "req_per_s": round(stats["requests"] / seconds, 1),
        "MB_per_s": round(body_bytes / seconds / 1e6, 1),
        "p50_ms": stats["p50_ms"],
        "p99_ms": stats["p99_ms"],
        "server_cpu_pct": round(100 * server_cpu / seconds, 1),
        "server_cpu_ms_per_GB": round(1000 * server_cpu / (body_bytes / 1e9), 1) if body_bytes else None,
    }


def summarize(results: list[dict[str, Any]], connections: int) -> dict[str, Any]:
    def median(server: str, key: str) -> float:
        picked = [float(r[key]) for r in results if r["server"] == server and r["connections"] == connections]
        return statistics.median(picked)

    servers = sorted({r["server"] for r in results})
    summary: dict[str, Any] = {"summary_connections": connections}
    for server in servers:
        summary[server] = {key: median(server, key) for key in ("MB_per_s", "req_per_s", "server_cpu_pct")}
    for name in ("nginx-1w", "nginx-2w"):
        summary[f"ratio_ours/{name}"] = round(median("ours", "MB_per_s") / median(name, "MB_per_s"), 3)
    return summary


def check_piece(target: Target, framed: bytes, num: int) -> None:
    start = num * PIECE
    status, _, body = request(target.port, "GET", {"Range": f"bytes={start}-{start + PIECE - 1}"})
    expected = framed[start : start + PIECE]
    if status != 206 or hashlib.sha256(body).digest() != hashlib.sha256(expected).digest():
        raise RuntimeError(f"{target.name} served wrong bytes for piece {num}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--connections", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--pieces", type=int, default=32, help="full 4 MiB pieces in the seed file")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the summary takes medians")
    parser.add_argument("--extra", action="store_true", help="also run the uvloop and no-sendfile variants")
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} not found: apt-get install -y {tool}")

    with tempfile.TemporaryDirectory(prefix="bench-download-") as tmp:
        base = Path(tmp) / "repo"
        framed, pieces = build_seed(base, args.pieces)
        script = Path(tmp) / "pieces.lua"
        with ours(base) as mine, nginx(base, Path(tmp) / "nginx-parity", 1) as theirs:
            print(json.dumps(parity(mine, theirs)), flush=True)

        variants: list[Callable[[], contextlib.AbstractContextManager[Target]]] = [
            lambda: ours(base),
            lambda: nginx(base, Path(tmp) / "nginx-1", workers=1),
            lambda: nginx(base, Path(tmp) / "nginx-2", workers=2),
        ]
        if args.extra:
            variants.append(lambda: ours(base, "ours-uvloop", uvloop=True))
            variants.append(lambda: ours(base, "ours-nosendfile", nosendfile=True))
        results = []
        for _round in range(args.repeat):
            for connections in args.connections:
                # Interleaved, so drift (page cache, CPU boost, neighbours) hits every server alike.
                for launch in variants:
                    with launch() as target:
                        check_piece(target, framed, pieces - 1)
                        result = run_wrk(target, pieces, connections, args.duration, script)
                    print(json.dumps(result), flush=True)
                    results.append(result)
        for connections in args.connections:
            print(json.dumps(summarize(results, connections)), flush=True)


if __name__ == "__main__":
    main()
