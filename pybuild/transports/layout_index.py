"""The `index.json` of an OCI layout: how its entries are named, chosen and merged.

An entry is named by two annotations: `org.opencontainers.image.ref.name` (skopeo's
`oci:DIR:NAME`, BuildKit's tag) and `io.containerd.image.name` (the full image name, as
BuildKit's and Docker 25's exporters write it).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from pybuild.canonical import canonical_json
from pybuild.digest import Digest
from pybuild.errors import NotFoundError, UserError
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, Descriptor, Index
from pybuild.oci.reference import Reference

OCI_LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LAYOUT_VERSION = "1.0.0"


@dataclass(frozen=True, slots=True)
class LayoutName:
    """The two annotations that name an image in an index.json."""

    ref_name: str  # org.opencontainers.image.ref.name, e.g. "latest"
    image_name: str | None  # io.containerd.image.name, e.g. "docker.io/library/app:1"


def layout_name(ref: str) -> LayoutName:
    """How `ref_name=` is read.

    A full image reference (it has a ":", "/" or "@": `app:1`, `ghcr.io/o/app`) names the
    image the way BuildKit's oci exporter does: `ref.name` is its tag and
    `io.containerd.image.name` the normalised name. A bare word (`latest`, `amd64`) is the
    `ref.name` itself, as in skopeo's `oci:DIR:latest`.
    """
    if not ref or ref != ref.strip():
        raise UserError(f"invalid OCI layout reference {ref!r}", code="bad-reference")
    if any(c in ref for c in ":/@"):
        parsed = Reference.parse(ref)
        return LayoutName(ref_name=parsed.tag or str(parsed.digest), image_name=str(parsed))
    return LayoutName(ref_name=ref, image_name=None)


def named_entries(descriptor: Descriptor, names: Sequence[str]) -> list[Descriptor]:
    """The index.json entries of an image with `names` (see `layout_name`): one per name,
    as containerd's archive exporter writes them for BuildKit, or one unnamed entry."""
    entries: list[Descriptor] = []
    for name in names:
        entry = named_descriptor(descriptor, layout_name(name))
        if entry not in entries:
            entries.append(entry)
    return entries or [descriptor]


def named_descriptor(descriptor: Descriptor, name: LayoutName | None) -> Descriptor:
    if name is None:
        return descriptor
    extra = {ANNOTATION_REF_NAME: name.ref_name}
    if name.image_name is not None:
        extra[ANNOTATION_IMAGE_NAME] = name.image_name
    return descriptor.with_annotations(**extra)


def unnamed(descriptor: Descriptor) -> Descriptor:
    """The descriptor without the naming annotations (as the image store keeps it)."""
    kept = tuple((k, v) for k, v in descriptor.annotations
                 if k not in (ANNOTATION_REF_NAME, ANNOTATION_IMAGE_NAME))
    return dataclasses.replace(descriptor, annotations=kept)


def entry_names(desc: Descriptor) -> list[str]:
    """The names an entry answers to (either annotation)."""
    return [n for n in (desc.annotation(ANNOTATION_REF_NAME),
                        desc.annotation(ANNOTATION_IMAGE_NAME)) if n]


def image_names(entries: tuple[Descriptor, ...], digest: Digest) -> tuple[str, ...]:
    """The image names the layout records for `digest`, as full references: the
    `io.containerd.image.name`s of its entries, else a `ref.name` that is a reference
    (`app:1`, not a bare tag like `latest`). Names that do not parse are left out."""
    out: list[str] = []
    for entry in entries:
        if entry.digest != digest:
            continue
        candidate = entry.annotation(ANNOTATION_IMAGE_NAME)
        ref_name = entry.annotation(ANNOTATION_REF_NAME)
        if candidate is None and ref_name and any(c in ref_name for c in ":/"):
            candidate = ref_name
        if candidate is None:
            continue
        with contextlib.suppress(UserError):
            name = str(Reference.parse(candidate))
            if name not in out:
                out.append(name)
    return tuple(out)


def select_entry(entries: tuple[Descriptor, ...], where: str, *, name: str | None = None,
                 digest: Digest | None = None, index: int | None = None) -> Descriptor:
    """The entry named `name` (a ref name or an image name), with manifest `digest`, or at
    position `index`; with none of them, the only image of the layout."""
    if not entries:
        raise NotFoundError(f"{where}: index.json lists no images")
    if index is not None:
        if not 0 <= index < len(entries):
            raise NotFoundError(f"{where} has no image @{index} (it lists {len(entries)})")
        return entries[index]
    if digest is not None:
        matches = [d for d in entries if d.digest == digest]
        label = str(digest)
    elif name is not None:
        wanted = {name}
        with contextlib.suppress(UserError):  # `app:1` also finds docker.io/library/app:1
            wanted.add(str(Reference.parse(name)))
        matches = [d for d in entries if wanted & set(entry_names(d))]
        label = name
    else:
        matches, label = list(entries), ""
    if len({d.digest for d in matches}) == 1:
        return matches[0]
    available = sorted({n for d in entries for n in entry_names(d)}) or ["(unnamed images only)"]
    if not matches:
        raise NotFoundError(f"{where} has no image {'named ' if name else ''}{label!r}",
                            hint=f"available: {', '.join(available)}")
    raise UserError(f"{where} holds {len(matches)} images; choose one by name",
                    code="ambiguous-image", hint=f"available: {', '.join(available)}")


def merge_entry(manifests: list[Descriptor], entry: Descriptor) -> list[Descriptor]:
    """index.json's entries after adding `entry`: an entry with the same ref name loses
    it (the name moves to the new image, as skopeo does)."""
    ref = entry.annotation(ANNOTATION_REF_NAME)
    kept = [m for m in manifests
            if not (ref is not None and m.annotation(ANNOTATION_REF_NAME) == ref)
            and m != entry]
    return [*kept, entry]


def layout_file_bytes() -> bytes:
    return canonical_json({"imageLayoutVersion": LAYOUT_VERSION})


def index_bytes(manifests: list[Descriptor]) -> bytes:
    return Index(media_type=mt.OCI_INDEX, manifests=tuple(manifests)).encode()
