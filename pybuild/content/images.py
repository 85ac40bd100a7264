"""The local image store: names -> manifest/index descriptors, kept in one JSON file.

Updates take an exclusive flock, write a temp file, fsync and rename, so a killed
process leaves either the old or the new file, never a torn one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pybuild.canonical import canonical_json
from pybuild.errors import NotFoundError, UserError
from pybuild.oci.descriptor import Descriptor
from pybuild.oci.reference import Reference


@dataclass(frozen=True, slots=True)
class ImageRecord:
    name: str  # fully qualified reference string
    descriptor: Descriptor
    created: str  # when the name was last set (RFC 3339)


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._file = root / "images.json"
        self._lock = root / "images.lock"

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        fd = os.open(self._lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def _load(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self._file.read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise UserError(f"image store index {self._file} is unreadable: {exc}") from None
        return data.get("images", {}) if isinstance(data, dict) else {}

    def _save(self, images: dict[str, dict[str, object]]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".images-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(canonical_json({"images": images}))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._file)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @staticmethod
    def _record(name: str, raw: dict[str, object]) -> ImageRecord:
        return ImageRecord(
            name=name,
            descriptor=Descriptor.from_json(raw["descriptor"], where=f"image {name}"),
            created=str(raw.get("created", "")),
        )

    def list(self) -> list[ImageRecord]:
        with self._locked(False):
            images = self._load()
        return [self._record(n, r) for n, r in sorted(images.items())]

    def get(self, ref: Reference | str) -> ImageRecord:
        name = str(ref if isinstance(ref, Reference) else Reference.parse(ref))
        with self._locked(False):
            raw = self._load().get(name)
        if raw is None:
            raise NotFoundError(f"image {_familiar(name)} is not in the local image store")
        return self._record(name, raw)

    def find(self, ref: Reference | str) -> ImageRecord | None:
        try:
            return self.get(ref)
        except NotFoundError:
            return None

    def put(self, ref: Reference | str, descriptor: Descriptor, created: str) -> None:
        name = str(ref if isinstance(ref, Reference) else Reference.parse(ref))
        with self._locked(True):
            images = self._load()
            images[name] = {"descriptor": descriptor.to_json(), "created": created}
            self._save(images)

    def remove(self, ref: Reference | str) -> ImageRecord:
        name = str(ref if isinstance(ref, Reference) else Reference.parse(ref))
        with self._locked(True):
            images = self._load()
            raw = images.pop(name, None)
            if raw is None:
                raise NotFoundError(f"image {_familiar(name)} is not in the local image store")
            self._save(images)
        return self._record(name, raw)


def _familiar(name: str) -> str:
    try:
        return Reference.parse(name).familiar
    except UserError:
        return name
