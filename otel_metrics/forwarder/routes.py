"""The OTLP/HTTP routes the receiver serves, one per signal: the path, the request and response
messages, the decoder, and how a partial success is said."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Type, cast

from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from .decode import Decoded, events_from_metrics, sessions_from_traces


@dataclass(frozen=True)
class Route:
    path: str
    request: Type[Message]
    response: Type[Message]
    rejected_field: str  # of the response's partial_success
    decode: Callable[[Any], Decoded]  # takes a message of the route's request class

    def response_for(self, decoded: Decoded) -> Message:
        """Empty on full success; partial_success filled when something was rejected."""
        response: Any = self.response()  # each signal's response class has its own partial_success
        if decoded.errors:
            setattr(response.partial_success, self.rejected_field, decoded.rejected)
            response.partial_success.error_message = decoded.error_message()
        return cast(Message, response)


METRICS = Route(
    "/v1/metrics",
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
    "rejected_data_points",
    events_from_metrics,
)
TRACES = Route(
    "/v1/traces",
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
    "rejected_spans",
    sessions_from_traces,
)
ROUTES: Dict[str, Route] = {route.path: route for route in (METRICS, TRACES)}
