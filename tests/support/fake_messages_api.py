"""A loopback stand-in for the Anthropic Messages API, scripted per test.

It speaks what Claude Code uses: `POST /v1/messages` (streaming SSE as the API
documents it: message_start, content_block_start/delta/stop, message_delta,
message_stop; or one JSON message when `stream` is false) and
`POST /v1/messages/count_tokens`.

A script maps a *marker* (a string in the first user message of a conversation:
the prompt of the main session, or the prompt a subagent was given) to the
replies of that conversation, one per assistant turn. The turn is the number of
assistant messages already in the request, so the main conversation and its
subagents can interleave freely. Requests that match no marker (Claude Code's
side requests) get a short text answer.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Optional, Tuple

FALLBACK_TEXT = "OK."
MODEL = "claude-sonnet-4-5"
# Token counts reported for every reply: the session aggregates then have tokens to sum.
INPUT_TOKENS = 120
OUTPUT_TOKENS = 30
CACHE_READ_TOKENS = 7


@dataclass(frozen=True)
class ToolCall:
    name: str
    input: Dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """One assistant turn: optional text, then tool calls (stop_reason tool_use if any)."""

    text: str = ""
    tool_calls: Tuple[ToolCall, ...] = ()


def text(answer: str) -> Reply:
    return Reply(text=answer)


def tools(*calls: ToolCall, say: str = "") -> Reply:
    return Reply(text=say, tool_calls=tuple(calls))


@dataclass
class Script:
    conversations: Dict[str, List[Reply]] = field(default_factory=dict)

    def reply_for(self, request: Dict[str, Any]) -> Tuple[Optional[str], Reply]:
        """The marker matched (None for side requests) and the reply to send."""
        messages = request.get("messages") or []
        first_user = _text_of(messages[0]) if messages else ""
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        # The longest marker wins: a subagent's prompt may quote the main prompt.
        for marker in sorted(self.conversations, key=len, reverse=True):
            if marker in first_user:
                replies = self.conversations[marker]
                if turn < len(replies):
                    return marker, replies[turn]
                return marker, text(FALLBACK_TEXT)
        return None, text(FALLBACK_TEXT)


def _text_of(message: Dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "\n".join(parts)


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    body: Dict[str, Any]
    marker: Optional[str]


class FakeMessagesAPI:
    """A real HTTP server on 127.0.0.1 (ephemeral port); use as a context manager."""

    def __init__(self, script: Optional[Script] = None) -> None:
        self.script = script or Script()
        self.requests: List[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeMessagesAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeMessagesAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def next_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}_{next(self._ids):024d}"

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def matched(self, marker: str) -> List[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.marker == marker]


def _content_blocks(api: FakeMessagesAPI, reply: Reply) -> List[Dict[str, Any]]:
    blocks: List[Dict[str, Any]] = []
    if reply.text:
        blocks.append({"type": "text", "text": reply.text})
    for call in reply.tool_calls:
        blocks.append({"type": "tool_use", "id": api.next_id("toolu"), "name": call.name, "input": call.input})
    return blocks


def _usage() -> Dict[str, int]:
    return {
        "input_tokens": INPUT_TOKENS,
        "output_tokens": OUTPUT_TOKENS,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": CACHE_READ_TOKENS,
    }


def _message(api: FakeMessagesAPI, model: str, blocks: List[Dict[str, Any]], stop: str) -> Dict[str, Any]:
    return {
        "id": api.next_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": _usage(),
    }


def _sse_events(message: Dict[str, Any]) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """The documented event sequence for one message, text and tool_use blocks streamed in deltas."""
    start = dict(message, content=[], stop_reason=None, usage=dict(_usage(), output_tokens=1))
    yield "message_start", {"type": "message_start", "message": start}
    yield "ping", {"type": "ping"}
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": dict(block, input={}),
                },
            )
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": OUTPUT_TOKENS},
        },
    )
    yield "message_stop", {"type": "message_stop"}


def _handler_for(api: FakeMessagesAPI) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures
            pass

        def _body(self) -> Dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                return {}
            return body if isinstance(body, dict) else {}

        def _send_json(self, status: int, payload: Dict[str, Any], headers: Optional[Dict[str, str]] = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            self._send_json(200, {})

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            body = self._body()
            if path.endswith("/v1/messages/count_tokens"):
                api.record(RecordedRequest(path, body, None))
                self._send_json(200, {"input_tokens": INPUT_TOKENS})
                return
            if not path.endswith("/v1/messages"):
                api.record(RecordedRequest(path, body, None))
                self._send_json(404, {"type": "error", "error": {"type": "not_found_error", "message": path}})
                return
            marker, reply = api.script.reply_for(body)
            api.record(RecordedRequest(path, body, marker))
            blocks = _content_blocks(api, reply)
            stop = "tool_use" if reply.tool_calls else "end_turn"
            message = _message(api, str(body.get("model") or MODEL), blocks, stop)
            # The real API names each request; Claude Code writes it to the transcript as requestId.
            request_id = api.next_id("req")
            if not body.get("stream"):
                self._send_json(200, message, {"request-id": request_id})
                return
            self.send_response(200)
            self.send_header("request-id", request_id)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            for name, data in _sse_events(message):
                self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()
            self.close_connection = True

    return Handler
