"""OpenTelemetry export: one trace per build, received by a real OTLP/HTTP receiver that
decodes the official protobuf schema (opentelemetry-proto); off and free without the
variable."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pybuild.builder.events import VertexCached, VertexFailed, VertexStarted
from pybuild.errors import UserError
from pybuild.history import BuildRecorder, HistoryOptions, RequestSummary, VertexInfo
from pybuild.history.otel import OtelSettings, export_trace

REPO = Path(__file__).resolve().parents[2]


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on loopback: decodes ExportTraceServiceRequest."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self.requests: list[Any] = []
        self.headers: list[dict[str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or self.headers.get(
                        "Content-Type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                msg = trace_service_pb2.ExportTraceServiceRequest()
                msg.ParseFromString(body)
                receiver.requests.append(msg)
                receiver.headers.append(dict(self.headers))
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def spans(self) -> list[Any]:
        return [s for req in self.requests for rs in req.resource_spans
                for ss in rs.scope_spans for s in ss.spans]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.close()


def attrs(span: Any) -> dict[str, Any]:
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = (v.string_value if v.HasField("string_value") else
                       v.bool_value if v.HasField("bool_value") else
                       v.int_value if v.HasField("int_value") else
                       [x.string_value for x in v.array_value.values])
    return out


def _record(root: Path, settings: OtelSettings | None) -> BuildRecorder:
    rec = BuildRecorder(root, HistoryOptions(otel=settings))
    rec.start(RequestSummary(name="traced", platforms=("linux/amd64",)))
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    rec.add_vertices([VertexInfo(digest=a, name="[base 1/2] FROM busybox", stage="base",
                                 platform="linux/amd64"),
                      VertexInfo(digest=b, name="[base 2/2] RUN false", stage="base",
                                 platform="linux/amd64", inputs=(a,))])
    rec(VertexCached(digest=a, name="[base 1/2] FROM busybox"))
    rec(VertexStarted(digest=b, name="[base 2/2] RUN false"))
    rec(VertexFailed(digest=b, name="[base 2/2] RUN false", error="exit code: 1"))
    return rec


def test_one_trace_per_build(tmp_path: Path, receiver: OtlpReceiver) -> None:
    settings = OtelSettings.from_environ({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                                          "OTEL_EXPORTER_OTLP_HEADERS": "x-team=build%20ops",
                                          "OTEL_SERVICE_NAME": "ci-builds"})
    rec = _record(tmp_path, settings)
    rec.finish(error=UserError("the RUN step failed", code="step-failed"))
    assert rec.problems == []
    assert len(receiver.requests) == 1
    assert receiver.headers[0].get("x-team") == "build ops"
    resource = {kv.key: kv.value.string_value
                for kv in receiver.requests[0].resource_spans[0].resource.attributes}
    assert resource["service.name"] == "ci-builds"
    spans = receiver.spans()
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 1
    root = roots[0]
    assert root.name == "pybuild build traced"
    children = [s for s in spans if s.parent_span_id == root.span_id]
    assert len(children) == 2 and all(s.trace_id == root.trace_id for s in spans)
    by_name = {s.name: s for s in children}
    cached = attrs(by_name["[base 1/2] FROM busybox"])
    assert cached["vertex.cached"] is True and cached["vertex.stage"] == "base"
    assert cached["vertex.platform"] == "linux/amd64"
    assert cached["vertex.digest"] == "sha256:" + "a" * 64
    failed = by_name["[base 2/2] RUN false"]
    assert attrs(failed)["vertex.cached"] is False
    assert failed.status.code == 2  # STATUS_CODE_ERROR
    assert [e.name for e in failed.events] == ["exception"]
    assert attrs(root)["build.status"] == "failed" and root.status.code == 2
    assert [e.name for e in root.events] == ["exception"]
    assert root.start_time_unix_nano <= failed.start_time_unix_nano <= root.end_time_unix_nano


def test_a_collector_that_is_down_does_not_fail_the_build(tmp_path: Path) -> None:
    receiver = OtlpReceiver()
    endpoint = receiver.endpoint
    receiver.close()  # nothing listens there now
    settings = OtelSettings.from_environ({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                                          "OTEL_EXPORTER_OTLP_TIMEOUT": "500"})
    rec = _record(tmp_path, settings)
    record = rec.finish()
    assert record is not None and record.status == "completed"
    assert rec.problems and "OpenTelemetry export" in rec.problems[0]
    assert export_trace(record, settings).startswith("OpenTelemetry export to")


def test_settings_from_the_environment() -> None:
    s = OtelSettings.from_environ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/",
                                   "OTEL_EXPORTER_OTLP_TIMEOUT": "2500"})
    assert s.endpoint == "http://c:4318/v1/traces" and s.timeout == 2.5
    s = OtelSettings.from_environ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                                   "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/x"})
    assert s.endpoint == "http://t:1/x"
    with pytest.raises(UserError, match="http/protobuf only"):
        OtelSettings.from_environ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
                                   "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    with pytest.raises(UserError, match="expected an http"):
        OtelSettings.from_environ({"OTEL_EXPORTER_OTLP_ENDPOINT": "c:4318"})
    assert HistoryOptions.from_environ({}).otel is None
    assert HistoryOptions.from_environ(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}).otel is not None


_OFF = """
import sys, tempfile
from pathlib import Path
from pybuild.builder.events import VertexDone, VertexStarted
from pybuild.history import BuildRecorder, HistoryOptions, RequestSummary
with tempfile.TemporaryDirectory() as d:
    rec = BuildRecorder(Path(d), HistoryOptions.from_environ({}))
    rec.start(RequestSummary(name="x"))
    rec(VertexStarted(digest="sha256:" + "a" * 64, name="x"))
    rec(VertexDone(digest="sha256:" + "a" * 64, name="x", seconds=0))
    rec.finish()
print(sorted(m for m in sys.modules if m.startswith(("opentelemetry", "google.protobuf",
                                                    "requests", "pybuild.history.otel",
                                                    "pybuild.history.trace"))))
"""


def test_off_costs_nothing() -> None:
    """Without the variable, a recorded build loads neither the SDK nor protobuf (nor the
    timeline code): the import cost of tracing is zero."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", _OFF], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"
