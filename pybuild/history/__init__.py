"""Build history: durable records of builds, read back by `pybuild history`, drawn as a
timeline, exported as OpenTelemetry traces.

The build attaches a `BuildRecorder` (an EventSink) and calls start / describe_vertices /
finish; readers use `store` (list, resolve refs, load, remove, prune). Importing this
package is cheap: the timeline, the archive and OpenTelemetry load only when used."""

from pybuild.history.model import (
    BuildRecord,
    ErrorInfo,
    RequestSummary,
    Status,
    VertexInfo,
    VertexRecord,
)
from pybuild.history.recorder import BuildRecorder, HistoryOptions, tee
from pybuild.history.store import PruneReport, history_root, prune_records

__all__ = [
    "BuildRecord", "BuildRecorder", "ErrorInfo", "HistoryOptions", "PruneReport",
    "RequestSummary", "Status", "VertexInfo", "VertexRecord", "history_root",
    "prune_records", "tee",
]
