"""The build records of one root, as `docker buildx history` shows them: list, read,
export and import, remove, and draw as a timeline (`pybuild history`).

    history = BuildHistory(Builder().root)
    last = history.get("^0")               # or "" (the newest), an id, a unique prefix
    print(history.picture(last, "svg"))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

from pybuild.errors import UserError

if TYPE_CHECKING:
    from pybuild.history import BuildRecord
    from pybuild.history.store import RecordHead
    from pybuild.root import Root


class BuildHistory:
    """`root`: a pybuild root (a `Root` or its path). Refs are buildx's: empty (the newest),
    `^N` (N records back, `^0` the newest), a record id, or a unique prefix of one."""

    def __init__(self, root: Root | Path | str) -> None:
        self.path = Path(root) if isinstance(root, str | Path) else root.path

    def records(self) -> list[RecordHead]:
        """Every readable record, newest first."""
        from pybuild.history import store

        return store.heads(self.path)

    def get(self, ref: str = "") -> BuildRecord:
        from pybuild.history import store

        return store.load(store.resolve(self.path, ref))

    def _finished(self) -> list[Path]:
        return [h.path for h in self.records() if h.status != "running"]

    def export(self, refs: Sequence[str], dest: Path | BinaryIO, *,
               everything: bool = False) -> int:
        """Write the records (`everything`: every finished one) to a portable archive;
        returns how many."""
        from pybuild.history import store
        from pybuild.history.archive import export_records

        if everything and refs:
            raise UserError("history export: give REFs or --all, not both")
        dirs = (self._finished() if everything
                else [store.resolve(self.path, r) for r in refs or [""]])
        if not dirs:
            raise UserError("no build records to export")
        return export_records(dirs, dest)

    def import_archive(self, source: Path | BinaryIO) -> list[str]:
        """Add the records of an exported archive; returns their refs."""
        from pybuild.history.archive import import_records

        return import_records(self.path, source)

    def remove(self, refs: Sequence[str], *, everything: bool = False) -> list[str]:
        """Remove records (a running build's is refused); returns the refs removed. Every
        ref is resolved before any record goes."""
        from pybuild.history import store

        if everything and refs:
            raise UserError("history rm: give REFs or --all, not both")
        if not everything and not refs:
            raise UserError("history rm requires either --all or at least one REF")
        dirs = self._finished() if everything else [store.resolve(self.path, r) for r in refs]
        for d in dirs:
            store.remove(d)
        return [d.name for d in dirs]

    def timeline_page(self, ref: str = "") -> Path:
        """The record's timeline as an HTML page kept beside it (for `history open`)."""
        from pybuild.history import store
        from pybuild.history.trace_html import write_timeline

        try:
            return write_timeline(store.resolve(self.path, ref))
        except OSError as exc:
            raise UserError(f"cannot write the timeline next to the record: {exc.strerror}"
                            ) from None

    def picture(self, record: BuildRecord | str, fmt: Literal["html", "svg"]) -> str:
        """A record's timeline (the record, or its ref): a self-contained HTML page or an
        SVG."""
        if isinstance(record, str):
            record = self.get(record)
        if fmt == "svg":
            from pybuild.history.trace_svg import render_svg

            return render_svg(record)
        from pybuild.history.trace_html import render_html

        return render_html(record)
