"""The OTLP/HTTP wire format: bodies in protobuf or OTLP/JSON, by media type, and the Status of an error.

Messages are parsed by opentelemetry-proto (protobuf) and protobuf's json_format
(OTLP/JSON, under strict_json's rules), never by hand.
"""

from __future__ import annotations

from typing import Optional, Type, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from .. import strict_json

PROTOBUF = "protobuf"
JSON = "json"
MEDIA_TYPES = {"application/x-protobuf": PROTOBUF, "application/protobuf": PROTOBUF, "application/json": JSON}
CONTENT_TYPES = {PROTOBUF: "application/x-protobuf", JSON: "application/json"}  # what answers are sent as
# google.rpc.Code for the Status body of each error status (UNKNOWN for others).
RPC_CODES = {
    400: 3,  # INVALID_ARGUMENT
    408: 4,  # DEADLINE_EXCEEDED
    411: 3,
    413: 8,  # RESOURCE_EXHAUSTED
    415: 12,  # UNIMPLEMENTED
    417: 3,
    431: 8,
    500: 13,  # INTERNAL
    501: 12,
    503: 14,  # UNAVAILABLE
    505: 12,
}
RPC_UNKNOWN = 2

AnyMessage = TypeVar("AnyMessage", bound=Message)


class BadRequest(ValueError):
    """The body is not an OTLP export request at all (the whole request fails)."""


def encoding_of(content_type: str) -> Optional[str]:
    """PROTOBUF or JSON for a Content-Type header (parameters such as charset aside), None for others."""
    return MEDIA_TYPES.get(content_type.split(";", 1)[0].strip().lower())


def parse(message_class: Type[AnyMessage], body: bytes, encoding: str) -> AnyMessage:
    message: AnyMessage = message_class()
    try:
        if encoding == PROTOBUF:
            message.ParseFromString(body)
        else:
            document = strict_json.loads(body)
            if not isinstance(document, dict):  # json_format would take `[]` for an empty message
                raise ValueError("the JSON body must be an object")
            # OTLP/JSON writes trace and span ids in hex where proto3 JSON wants
            # base64; both are valid base64 text, and the ids are not used here.
            json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError, ValueError, RecursionError) as error:
        raise BadRequest(f"not an OTLP/{encoding} {message_class.__name__}: {error}") from error
    return message


def serialize(message: Message, encoding: str) -> bytes:
    if encoding == PROTOBUF:
        body: bytes = message.SerializeToString()
        return body
    text: str = json_format.MessageToJson(message, indent=None)
    return text.encode("utf-8")


def status(http_status: int, text: str) -> status_pb2.Status:
    """The body of an OTLP/HTTP error response (google.rpc.Status), its code the HTTP status's."""
    return status_pb2.Status(code=RPC_CODES.get(http_status, RPC_UNKNOWN), message=text)
