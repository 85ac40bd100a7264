"""`--cache-to` / `--cache-from`: split into `cache.artifact` (the format, no I/O) and
`builder.remote_cache` (the I/O over transports and the registry)."""

# moved to pybuild/cache/artifact.py and pybuild/builder/remote_cache.py; the lead removes
# this shim (and its `ignore_imports` line in pyproject.toml)
from __future__ import annotations

from pybuild.builder.remote_cache import (
    CacheOption,
    ImportedCache,
    build_cache_manifest,
    export_cache,
    import_caches,
    parse_cache_option,
)
from pybuild.cache.artifact import (
    ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE,
    ExportRecord,
    export_records_for,
)

__all__ = [
    "ARTIFACT_TYPE",
    "CONFIG_MEDIA_TYPE",
    "CacheOption",
    "ExportRecord",
    "ImportedCache",
    "build_cache_manifest",
    "export_cache",
    "export_records_for",
    "import_caches",
    "parse_cache_option",
]
