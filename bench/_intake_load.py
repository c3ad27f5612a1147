"""Load generator for ``bench intake``:
``python -m bench._intake_load URL KEY SECONDS CONC RATE [JOBS_FILE OK_FILE]``.

Why raw asyncio streams and not httpx: a client that spends a millisecond of CPU per request
measures itself, not the receiver. Each of ``CONC`` keep-alive HTTP/1.1 connections writes a
pre-formatted request (MSS_A_HEAD signature computed once per second: it only covers the path
and the hex time) and reads the status line, headers and ``Content-Length`` body back.

``RATE`` 0 = closed loop (each connection sends its next request as soon as the previous answer
arrives: maximum throughput). ``RATE`` > 0 = open loop at that many requests/s: request ``i`` is
due at ``t0 + i/RATE`` and its latency counts from that due time, so a stalled server cannot hide
its queue (no coordinated omission). Prints one JSON line with counts, elapsed time, latency
percentiles and this process's CPU seconds.

With ``JOBS_FILE`` (a JSON list of ``[room_id, job_id]``, the daemon's real jobs) each request is
a ``SHOOT_SCRIPT_SWITCH`` for job ``i % len(jobs)`` whose sequence number is the request id
``i``, so every request is a distinct event with its own inbox row; the ids answered 200 are
written to ``OK_FILE`` (a JSON list) for the per-id persistence check. Without it, the bodies
are RTMP ``CONNECTED`` callbacks for a distinct unknown job each (the bare-receiver mode).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import resource
import sys
import time
from urllib.parse import urlsplit

PATH = "/callbacks/metastudio"


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(p / 100 * len(ordered)))) - 1]


class _Signer:
    """The MSS_A_HEAD header pair for the current second, cached for that second."""

    def __init__(self, key: str, path: str) -> None:
        self._key = key.encode()
        self._path = path
        self._second = -1
        self._headers = b""

    def headers(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            t = format(now, "x")
            sig = hmac.new(self._key, (self._path + t).encode(), hashlib.sha256).hexdigest()
            self._headers = f"x-hw-mss-secret: {sig}\r\nx-hw-mss-time: {t}\r\n".encode()
            self._second = now
        return self._headers


def _body(i: int) -> bytes:
    msg = json.dumps(
        {
            "room_id": "room-1",
            "job_id": f"job-{i}",
            "output_url": "rtmp://x/y",
            "stream_key": "k",
            "state": "CONNECTED",
        }
    )
    return json.dumps({"event_type": "RTMP_STREAM_STATE_CHANGE", "message": msg}).encode()


def _script_body(i: int, jobs: list[tuple[str, str]]) -> bytes:
    room, job = jobs[i % len(jobs)]
    msg = json.dumps(
        {
            "room_id": room,
            "job_id": job,
            "scene_script_name": "bench",
            "shoot_script_sequence_no": str(i),
            "shoot_script_title": "",
        }
    )
    return json.dumps({"event_type": "SHOOT_SCRIPT_SWITCH", "message": msg}).encode()


async def _main(
    url: str,
    key: str,
    seconds: float,
    conc: int,
    rate: float,
    jobs: list[tuple[str, str]] | None = None,
    ok_ids: list[int] | None = None,
) -> dict[str, object]:
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
    signer = _Signer(key, path)
    head = f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
    head_b = head.encode()
    counter = 0
    ok = bad = errors = 0
    latencies: list[float] = []
    t0 = time.perf_counter() + 0.2  # connections open first
    stop_at = t0 + seconds

    async def worker() -> None:
        nonlocal counter, ok, bad, errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                i = counter
                counter += 1
                if rate > 0:
                    due = t0 + i / rate
                    if due >= stop_at:
                        return
                    wait = due - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                else:
                    due = time.perf_counter()
                    if due >= stop_at:
                        return
                body = _body(i) if jobs is None else _script_body(i, jobs)
                writer.write(
                    head_b
                    + signer.headers()
                    + b"content-length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                status_line = await reader.readline()
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                if not status_line:
                    errors += 1
                    return
                if status_line.split(b" ", 2)[1] == b"200":
                    ok += 1
                    latencies.append(time.perf_counter() - due)
                    if ok_ids is not None:
                        ok_ids.append(i)
                else:
                    bad += 1
        finally:
            writer.close()

    started = time.perf_counter()
    results = await asyncio.gather(*(worker() for _ in range(conc)), return_exceptions=True)
    elapsed = time.perf_counter() - max(started, t0)
    errors += sum(1 for r in results if isinstance(r, BaseException))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "ok": ok,
        "bad": bad,
        "errors": errors,
        "elapsed_s": elapsed,
        "p50_ms": _percentile(latencies, 50) * 1000,
        "p99_ms": _percentile(latencies, 99) * 1000,
        "max_ms": max(latencies, default=math.nan) * 1000,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


def main() -> int:
    url, key, seconds, conc, rate = sys.argv[1:6]
    jobs: list[tuple[str, str]] | None = None
    ok_ids: list[int] | None = None
    if len(sys.argv) > 7:
        with open(sys.argv[6], encoding="utf-8") as f:
            jobs = [(str(r), str(j)) for r, j in json.load(f)]
        ok_ids = []
    out = asyncio.run(_main(url, key, float(seconds), int(conc), float(rate), jobs, ok_ids))
    if ok_ids is not None:
        with open(sys.argv[7], "w", encoding="utf-8") as f:
            json.dump(ok_ids, f)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
