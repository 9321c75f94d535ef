"""A tiny OTLP/HTTP trace collector: ``POST /v1/traces`` (protobuf) into a list of spans.

The processes under test export with OpenTelemetry's own OTLP/HTTP exporter; this
decodes what they send with ``opentelemetry.proto`` (the exporter's own dependency), so
a test sees exactly what Jaeger or an OpenTelemetry Collector would receive.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

#: OTLP's span kinds (``Span.SpanKind``), by number.
KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


@dataclass(frozen=True)
class CollectedSpan:
    """One received span, ids as lowercase hex (``parent_id`` empty for a root)."""

    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...]
    status_code: int
    status_message: str
    events: tuple[tuple[str, tuple[str, ...]], ...]


@dataclass
class Collector:
    """What the collector received: decoded spans, and every request body as sent."""

    endpoint: str = ""
    spans: list[CollectedSpan] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[CollectedSpan]:
        """The spans received so far."""
        with self.lock:
            return list(self.spans)

    def trace(self, trace_id: str) -> list[CollectedSpan]:
        """The spans of one trace received so far."""
        return [span for span in self.snapshot() if span.trace_id == trace_id]

    def receive(self, body: bytes) -> None:
        """Decode one ``ExportTraceServiceRequest`` and keep its spans."""
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            service = str(resource.get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        CollectedSpan(
                            service=service,
                            name=span.name,
                            kind=KINDS.get(span.kind, str(span.kind)),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes=_attributes(span.attributes),
                            links=tuple(
                                (link.trace_id.hex(), link.span_id.hex()) for link in span.links
                            ),
                            status_code=span.status.code,
                            status_message=span.status.message,
                            events=tuple(
                                (event.name, tuple(a.key for a in event.attributes))
                                for event in span.events
                            ),
                        )
                    )
        with self.lock:
            self.bodies.append(body)
            self.spans.extend(spans)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_value(item) for item in value.array_value.values)
    return getattr(value, kind)


@contextmanager
def otlp_collector() -> Iterator[Collector]:
    """An OTLP/HTTP collector on a free port of 127.0.0.1 (``endpoint``: its base URL)."""
    collector = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            coding = self.headers.get("Content-Encoding", "")
            if coding == "gzip":
                body = gzip.decompress(body)
            elif coding == "deflate":
                body = zlib.decompress(body)
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            collector.receive(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: pytest shows the test's own output

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    collector.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="otlp-collector", daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        server.shutdown()
        server.server_close()
