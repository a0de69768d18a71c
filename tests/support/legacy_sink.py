"""A stand-in for the legacy endpoint on loopback: answers as scripted, slowly, or never.

`LegacySink(upstream)` runs in a thread of the test: each POST is answered as
`sink.answer(target, payload)` says: None passes it on to `upstream` (the
reference endpoint, which validates and stores it) or answers 200 without one;
a status answers that status; a Reply can also wait before answering, hang
until the sink stops, or add Retry-After. Everything seen is kept.

Run as a process (`python tests/support/legacy_sink.py [--delay S]`, printing `listening on
URL` like the servers), it answers 200 to everything and tells GET /answered
when it answered each payload (by session id): the benchmarks' sink, on uvloop where installed.

asyncio rather than http.server: one thread serves every connection, hung
ones included, and a request costs a fraction of the CPU, so that a benchmark
measures the forwarder rather than its sink.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import threading
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import requests

from otel_metrics.event_loop import new_event_loop

REQUEST_HEAD_LIMIT = 64 * 1024


class Reply(NamedTuple):
    status: int = 200
    delay: float = 0.0  # seconds before answering
    hang: bool = False  # never answer (until the sink stops)
    retry_after: Optional[str] = None


Answer = Union[None, int, Reply]


class LegacySink:
    def __init__(
        self, upstream: str = "", delay: float = 0.0, tls: Optional[ssl.SSLContext] = None, event_loop: str = "asyncio"
    ) -> None:
        self.upstream = upstream
        self.tls = tls
        self.answer: Callable[[str, Dict[str, Any]], Answer] = lambda target, payload: None
        self.delay = delay  # for every request, before the scripted answer
        self.seen: List[Tuple[str, Dict[str, Any], Optional[int]]] = []  # (target, payload, status); None: hung
        self.answered_at: Dict[str, float] = {}  # session id -> time.monotonic() of its 2xx
        self.connections = 0
        self.keep_payloads = True
        self._lock = threading.Lock()
        self._passed = threading.Condition(self._lock)
        self._passing = 0  # requests being passed on to upstream
        self._loop = new_event_loop(event_loop)
        self._started = threading.Event()
        self._server: Optional[asyncio.AbstractServer] = None
        self._stopping: Optional[asyncio.Event] = None
        self._thread = threading.Thread(target=self._run, name="legacy-sink", daemon=True)
        self._thread.start()
        self._started.wait(10)
        assert self._server is not None, "the sink did not start"
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    def statuses(self) -> List[Optional[int]]:
        """The status of each answer so far, once those being passed on have theirs (None: hung)."""
        with self._passed:
            self._passed.wait_for(lambda: not self._passing, timeout=10)
            return [status for _, _, status in self.seen]

    def close(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop)
        self._thread.join(10)

    # The loop's side.

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._started.set()
        self._loop.run_until_complete(self._stopping.wait())
        self._server.close()
        connections = asyncio.all_tasks(self._loop)  # hung ones too: cancelled, not waited for
        for task in connections:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*connections, return_exceptions=True))
        self._loop.close()

    async def _start(self) -> None:
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=REQUEST_HEAD_LIMIT, ssl=self.tls)

    def _stop(self) -> None:
        self._stopping.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
        try:
            while not self._stopping.is_set():
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {}
                for line in header_lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                if method == "GET" and target == "/answered":
                    status, reply, extra = 200, json.dumps(self.answered_at).encode(), ""
                else:
                    answered = await self._answer(target, body)
                    if answered is None:
                        await self._stopping.wait()  # hang: the client sees no answer at all
                        return
                    status, reply, extra = answered
                close = headers.get("connection", "").lower() == "close"
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(reply)}\r\n"
                    f"{extra}{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n".encode("latin-1")
                    + reply
                )
                await writer.drain()
                if close:
                    return
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass  # the client left, or sent what no test sends
        finally:
            writer.close()

    async def _answer(self, target: str, body: bytes) -> Optional[Tuple[int, bytes, str]]:
        """(status, body, extra header lines), or None to hang."""
        payload = json.loads(body) if body else {}
        if self.delay:
            await asyncio.sleep(self.delay)
        scripted = self.answer(target, payload)
        reply = Reply(scripted) if isinstance(scripted, int) else scripted
        if reply is not None and reply.delay:
            await asyncio.sleep(reply.delay)
        if reply is not None and reply.hang:
            with self._lock:
                self.seen.append((target, payload, None))
            return None
        if reply is None and self.upstream:
            with self._lock:
                self._passing += 1
            try:
                status, content = await self._loop.run_in_executor(None, self._pass_on, target, body)
            except Exception:
                with self._passed:
                    self._passing -= 1
                    self._passed.notify_all()
                raise
        else:
            status = 200 if reply is None else reply.status
            content = json.dumps({"status": "stored"} if status < 300 else {"error": f"the sink says {status}"})
            content = content.encode()
        extra = f"Retry-After: {reply.retry_after}\r\n" if reply is not None and reply.retry_after else ""
        with self._passed:
            if self.keep_payloads:
                self.seen.append((target, payload, status))
            if 200 <= status < 300 and isinstance(payload, dict) and "session_id" in payload:
                self.answered_at[payload["session_id"]] = time.monotonic()
            if reply is None and self.upstream:
                self._passing -= 1
                self._passed.notify_all()
        return status, content, extra

    def _pass_on(self, target: str, body: bytes) -> Tuple[int, bytes]:
        path = target.split("://", 1)[-1].split("/", 1)[-1] if "://" in target else target.lstrip("/")
        with requests.Session() as http:
            http.trust_env = False  # loopback, whatever proxy the environment names
            response = http.post(f"{self.upstream}/{path}", data=body, timeout=10)
        return response.status_code, response.content


def main() -> None:
    parser = argparse.ArgumentParser(description="a legacy endpoint stand-in answering 200 to every POST")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()
    # The benchmarks' sink stands in for an endpoint elsewhere: what it costs these cores, it takes from
    # the forwarder measured beside it, so it runs on the cheaper loop where there is one.
    sink = LegacySink(delay=args.delay, event_loop="auto")
    sink.keep_payloads = False  # only when each was answered: a long benchmark must not grow the sink
    print(f"listening on {sink.url}", file=sys.stderr, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
