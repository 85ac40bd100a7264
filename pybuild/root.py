"""A pybuild root: where one installation's state lives, and its stores.

Every path under the root is named here and nowhere else. The stores open on first use:
a build reads neither before it has started its sandbox daemon (see `startup`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pybuild.content.paths import default_root
from pybuild.errors import UserError

if TYPE_CHECKING:
    from pybuild.content.images import ImageStore
    from pybuild.content.store import ContentStore


class Root:
    """`Root(path)`: the root at `path` (made if missing); `Root()`: the default one
    ($PYBUILD_ROOT, /var/lib/pybuild for root, ~/.local/share/pybuild for a user)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path).absolute() if path is not None else default_root()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise UserError(f"the pybuild root {self.path} is not a directory",
                            hint="pass --root DIR (or set PYBUILD_ROOT) to a directory") from None
        except OSError as exc:
            raise UserError(f"cannot use {self.path} as the pybuild root: {exc.strerror}",
                            hint="pass --root DIR (or set PYBUILD_ROOT) to a writable "
                                 "directory") from None
        self._content: ContentStore | None = None
        self._images: ImageStore | None = None

    def __repr__(self) -> str:
        return f"Root({str(self.path)!r})"

    # -- the stores ---------------------------------------------------------------------

    @property
    def content(self) -> ContentStore:
        if self._content is None:
            from pybuild.content.store import ContentStore

            self._content = ContentStore(self.content_dir)
        return self._content

    @property
    def images(self) -> ImageStore:
        if self._images is None:
            from pybuild.content.images import ImageStore

            self._images = ImageStore(self.images_dir)
        return self._images

    # -- paths --------------------------------------------------------------------------

    @property
    def content_dir(self) -> Path:
        return self.path / "content"

    @property
    def images_dir(self) -> Path:
        return self.path / "images"

    @property
    def cache_dir(self) -> Path:
        """Cache records, memos, and downloaded ADD sources (`http/`, `git/`)."""
        return self.path / "cache"

    @property
    def cache_db(self) -> Path:
        return self.cache_dir / "records.db"

    @property
    def stat_cache(self) -> Path:
        return self.cache_dir / "statcache.bin"

    @property
    def frontend_memo_dir(self) -> Path:
        return self.cache_dir / "frontend"

    @property
    def compression_memo(self) -> Path:
        """Which compressed blob each stored layer has per format (see layers/recompress)."""
        return self.cache_dir / "compressed.json"

    @property
    def sandbox(self) -> Path:
        """Everything owned by the build user namespace lives under here."""
        return self.path / "sandbox"

    @property
    def snapshots(self) -> Path:
        return self.sandbox / "snapshots"

    @property
    def tmp(self) -> Path:
        return self.sandbox / "tmp"

    @property
    def cache_mounts(self) -> Path:
        return self.sandbox / "cachemounts"

    @property
    def runtime_memo(self) -> Path:
        return self.sandbox / "runtime.json"

    @property
    def history_dir(self) -> Path:
        return self.path / "history"
