"""One OpenTelemetry trace per build, sent over OTLP/HTTP (protobuf) when
OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set.

A root span for the build and a child span per vertex, with the times the record holds
and the attributes it knows (name, cached, miss reason, stage, platform, digest); a
failed vertex and a failed build carry an `exception` event and an error status.
The OpenTelemetry SDK (`pip install 'pybuild[otel]'`) is imported only here, and this
module only when the variable is set: without it tracing costs nothing.

The settings are read from the environment at the edge (`OtelSettings.from_environ`) and
handed to the exporter as values, so the SDK reads no variable of its own."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from pybuild.errors import UserError
from pybuild.history.model import BuildRecord

_SUPPORTED_PROTOCOLS = ("", "http/protobuf")


@dataclass(frozen=True, slots=True, kw_only=True)
class OtelSettings:
    endpoint: str  # the full traces URL, e.g. http://127.0.0.1:4318/v1/traces
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0
    compression: str = ""  # "" | gzip | deflate
    certificate: str = ""
    client_certificate: str = ""
    client_key: str = ""
    service_name: str = "pybuild"
    resource: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> OtelSettings:
        """The OTLP exporter's standard variables, OTEL_EXPORTER_OTLP_* (a TRACES_ one
        wins over the general one): ENDPOINT (a base URL, /v1/traces is added; the
        TRACES_ one is the full URL), HEADERS, TIMEOUT (milliseconds, as the spec and
        BuildKit's Go SDK read it), COMPRESSION, CERTIFICATE, CLIENT_CERTIFICATE,
        CLIENT_KEY, PROTOCOL (http/protobuf only), and OTEL_SERVICE_NAME,
        OTEL_RESOURCE_ATTRIBUTES."""

        def var(name: str) -> str:
            return (environ.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}")
                    or environ.get(f"OTEL_EXPORTER_OTLP_{name}") or "").strip()

        protocol = var("PROTOCOL")
        if protocol not in _SUPPORTED_PROTOCOLS:
            raise UserError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: pybuild exports traces "
                            "over http/protobuf only",
                            hint="unset it, or set it to http/protobuf and point "
                                 "OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP port "
                                 "(4318)")
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        if not endpoint:
            base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
            endpoint = base.rstrip("/") + "/v1/traces"
        if not endpoint.startswith(("http://", "https://")):
            raise UserError(f"OTEL_EXPORTER_OTLP_ENDPOINT={endpoint!r}: expected an "
                            "http:// or https:// URL")
        # The spec gives OTEL_EXPORTER_OTLP_TIMEOUT in milliseconds.
        raw_timeout = var("TIMEOUT")
        try:
            timeout = float(raw_timeout) / 1000 if raw_timeout else 10.0
        except ValueError:
            raise UserError(f"OTEL_EXPORTER_OTLP_TIMEOUT={raw_timeout!r}: expected "
                            "milliseconds") from None
        compression = var("COMPRESSION").lower()
        if compression in ("none",):
            compression = ""
        if compression not in ("", "gzip", "deflate"):
            raise UserError(f"OTEL_EXPORTER_OTLP_COMPRESSION={compression}: expected gzip, "
                            "deflate or none")
        return cls(endpoint=endpoint, headers=_pairs(var("HEADERS")), timeout=timeout,
                   compression=compression, certificate=var("CERTIFICATE"),
                   client_certificate=var("CLIENT_CERTIFICATE"), client_key=var("CLIENT_KEY"),
                   service_name=environ.get("OTEL_SERVICE_NAME", "").strip() or "pybuild",
                   resource=_pairs(environ.get("OTEL_RESOURCE_ATTRIBUTES", "")))


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    """W3C-baggage-like "k=v,k2=v2" (values percent-decoded), as the spec's headers."""
    out = []
    for item in text.split(","):
        key, eq, value = item.partition("=")
        if eq and key.strip():
            out.append((key.strip(), unquote(value.strip())))
    return tuple(out)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def export_trace(record: BuildRecord, settings: OtelSettings) -> str:
    """Sends the record as one trace; returns "" or what went wrong (never raises: a
    collector that is down must not fail the build)."""
    try:
        return _export(record, settings)
    except ImportError as exc:
        return (f"OpenTelemetry export skipped: {exc.name or exc} is not installed "
                "(pip install 'pybuild[otel]')")
    except Exception as exc:  # the SDK's errors are not ours to raise
        return f"OpenTelemetry export to {settings.endpoint} failed: {exc}"


def _export(record: BuildRecord, settings: OtelSettings) -> str:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.trace import Status, StatusCode, set_span_in_context

    class Collect(SpanExporter):
        def __init__(self) -> None:
            self.spans: list[ReadableSpan] = []

        def export(self, spans: Any) -> SpanExportResult:
            self.spans.extend(spans)
            return SpanExportResult.SUCCESS

    collected = Collect()
    resource = Resource.create({"service.name": settings.service_name,
                                **dict(settings.resource)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(collected))
    tracer = provider.get_tracer("pybuild.history")
    q = record.request
    end = record.end
    root = tracer.start_span(
        f"pybuild build {q.name}".strip(), start_time=_ns(record.created),
        attributes={"build.ref": record.ref, "build.name": q.name, "build.status": record.status,
                    "build.context": q.context, "build.dockerfile": q.dockerfile,
                    "build.target": q.target, "build.platforms": list(q.platforms),
                    "build.tags": list(q.tags), "build.steps.total": record.total_steps,
                    "build.steps.cached": record.cached_steps,
                    "build.steps.completed": record.completed_steps})
    parent = set_span_in_context(root)
    for v in record.vertices:
        info = v.info
        start = v.started if v.started is not None else end
        attributes: dict[str, Any] = {
            "vertex.name": v.name, "vertex.digest": v.digest, "vertex.number": v.number,
            "vertex.cached": v.state == "cached", "vertex.status": v.state,
            "vertex.stage": info.stage if info else "",
            "vertex.platform": info.platform if info else "",
        }
        if v.miss_reason:
            attributes["vertex.miss_reason"] = v.miss_reason
        span = tracer.start_span(v.name or v.digest, context=parent, start_time=_ns(start),
                                 attributes=attributes)
        if v.error:
            span.add_event("exception", {"exception.type": "StepFailed",
                                         "exception.message": v.error},
                           timestamp=_ns(v.completed or end))
            span.set_status(Status(StatusCode.ERROR, v.error))
        span.end(end_time=_ns(max(v.completed if v.completed is not None else end, start)))
    if record.error is not None:
        root.add_event("exception", {"exception.type": record.error.code or "error",
                                     "exception.message": record.error.message},
                       timestamp=_ns(end))
    if record.status != "completed":
        root.set_status(Status(StatusCode.ERROR, record.error.message if record.error
                               else record.status))
    root.end(end_time=_ns(end))
    provider.shutdown()

    exporter = OTLPSpanExporter(
        endpoint=settings.endpoint, headers=dict(settings.headers), timeout=settings.timeout,
        compression=Compression(settings.compression) if settings.compression
        else Compression.NoCompression,
        certificate_file=settings.certificate or None,
        client_certificate_file=settings.client_certificate or None,
        client_key_file=settings.client_key or None)
    # The SDK logs its failures itself; the caller reports the one line returned here.
    sdk_log = logging.getLogger("opentelemetry")  # (its children inherit the level)
    level = sdk_log.level
    sdk_log.setLevel(logging.CRITICAL + 1)
    try:
        result = exporter.export(collected.spans)
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]
        sdk_log.setLevel(level)
    if result is not SpanExportResult.SUCCESS:
        return f"OpenTelemetry export to {settings.endpoint} failed"
    return ""
