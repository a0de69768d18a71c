"""A real OTLP/HTTP receiver on loopback that records what it is sent.

It stands where the collector stands (for the hooks' exporter), or where
Prometheus or Jaeger stand (for the collector's fan-out), and can be told to
refuse (503), to be slow (`delay`: seconds before each answer), or to go away
and come back on the same port.
"""

from __future__ import annotations

import gzip
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, List, Optional, Tuple

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from support.otlp_requests import attribute_values


class OtlpSink:
    def __init__(self, port: int = 0, delay: float = 0.0) -> None:
        self.metrics: List[ExportMetricsServiceRequest] = []
        self.traces: List[ExportTraceServiceRequest] = []
        self.requests: List[Tuple[str, bytes]] = []  # (path, body as sent, gunzipped)
        self.status = 200
        self.refuse: Optional[Callable[[bytes], bool]] = None  # bodies answered 400, as refused for good
        self.delay = delay
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None
        self.port = port
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if sink.delay:
                    time.sleep(sink.delay)
                status = 400 if sink.refuse is not None and sink.refuse(body) else sink.status
                if status == 200:
                    sink._record(self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _record(self, path: str, body: bytes) -> None:
        with self._lock:
            self.requests.append((path, body))
            if path.endswith("/v1/metrics"):
                self.metrics.append(ExportMetricsServiceRequest.FromString(body))
            elif path.endswith("/v1/traces"):
                self.traces.append(ExportTraceServiceRequest.FromString(body))

    def bodies(self, path: str) -> List[bytes]:
        with self._lock:
            return [body for got, body in self.requests if got == path]

    def event_points(self) -> list:
        """Every data point of our event counter, as (attributes dict, value)."""
        points = []
        with self._lock:
            for request in self.metrics:
                for rm in request.resource_metrics:
                    for sm in rm.scope_metrics:
                        for metric in sm.metrics:
                            for point in metric.sum.data_points:
                                points.append((attribute_values(point.attributes), point.as_int))
        return points

    def event_count(self) -> int:
        return sum(value for _, value in self.event_points())

    def spans(self) -> list:
        with self._lock:
            return [
                span
                for request in self.traces
                for rs in request.resource_spans
                for ss in rs.scope_spans
                for span in ss.spans
            ]
