"""The local image store as its commands see it: list, find (by name, digest or ID),
inspect, history, name, unname.

An image's ID is its config digest, as Docker and Podman show it (`IMAGE ID`): the config
is the same blob in the store, in every archive and in every registry the image is pushed
to, while the manifest digest changes with layer compression (the store keeps layers
uncompressed; exports and pushes compress them). A multi-platform image has no single
config: its ID is its index digest. Images are found by name, by ID or manifest digest
(`sha256:…`, or a unique prefix of at least 4 hex digits, as `build -q` prints or
`images` shows), or by `name@digest`.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass

from pybuild.content.images import ImageRecord
from pybuild.content.walk import platforms_of, reachable, read_config, read_manifest
from pybuild.content.walk import resolve_platform as _resolve_platform
from pybuild.digest import Digest
from pybuild.errors import NotFoundError, UserError
from pybuild.oci import mediatypes as mt
from pybuild.oci.config import ImageConfig
from pybuild.oci.descriptor import Descriptor, Manifest
from pybuild.oci.platform import Platform, host
from pybuild.oci.reference import Reference
from pybuild.root import Root

_HEX = re.compile(r"^(?:sha256:)?([0-9a-f]{4,64})$")
MIN_ID_PREFIX = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageSummary:
    name: str  # familiar form
    digest: str  # the stored manifest or index
    platforms: tuple[Platform, ...]
    size: int
    created: str  # when the image was made (its config's `created`), RFC 3339; "" unknown
    id: str = ""  # the image ID (see the module docstring)
    named: str = ""  # when this name was last set in the store
    broken: str = ""  # why the image cannot be read, if it cannot

    @property
    def repository(self) -> str:
        return _repository(self.name)

    @property
    def tag(self) -> str:
        return Reference.parse(self.name).tag or "<none>"


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageDetails:
    name: str  # the stored name it was found by ("" when found by digest alone)
    descriptor: Descriptor  # as stored (manifest or index)
    manifest_descriptor: Descriptor  # the platform's manifest
    manifest: Manifest
    config: ImageConfig
    id: Digest  # the image ID (config digest; an index's own digest)
    names: tuple[str, ...] = ()  # every stored name of this image (familiar form)
    named: str = ""  # when the name was set
    size: int = 0

    def docker(self) -> dict[str, object]:
        """`docker image inspect`'s fields for this image."""
        cfg = self.config
        extra = json.loads(cfg.extra_json)
        repos = dict.fromkeys(_repository(n) for n in self.names)
        out: dict[str, object] = {
            "Id": str(self.id),
            "RepoTags": list(self.names),
            "RepoDigests": [f"{r}@{self.descriptor.digest}" for r in repos],
            "Parent": "",
            "Comment": str(extra.get("comment", "")),
            "Created": cfg.created,
            "DockerVersion": str(extra.get("docker_version", "")),
            "Author": cfg.author,
            "Config": cfg.config.to_json(),
            "Architecture": cfg.architecture,
        }
        if cfg.variant:
            out["Variant"] = cfg.variant
        out["Os"] = cfg.os
        if cfg.os_version:
            out["OsVersion"] = cfg.os_version
        out["Size"] = self.size
        out["RootFS"] = {"Type": "layers", "Layers": [str(d) for d in cfg.diff_ids]}
        out["Metadata"] = {"LastTagTime": self.named}
        return out

    def to_json(self) -> dict[str, object]:
        """What `pybuild inspect` prints: docker's fields, then pybuild's own (the stored
        descriptor, the manifest and the full config as JSON)."""
        return {
            **self.docker(),
            "name": Reference.parse(self.name).familiar if self.name else "",
            "descriptor": self.descriptor.to_json(),
            "manifest_digest": str(self.manifest_descriptor.digest),
            "manifest": self.manifest.to_json(),
            "config": self.config.to_json(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryRow:
    """One entry of an image's history, newest first (`docker history`)."""

    id: str  # the image ID for the newest row, "<missing>" for the others (as Docker)
    created: str  # RFC 3339
    created_by: str
    size: int  # bytes of the layer it made (0: no layer)
    comment: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Removed:
    untagged: tuple[str, ...]  # the names removed (familiar form)
    descriptor: Descriptor


def _repository(name: str) -> str:
    """`app:1` -> `app`, `localhost:5000/a:b` -> `localhost:5000/a` (familiar)."""
    ref = Reference.parse(name)
    fam = Reference(domain=ref.domain, path=ref.path, tag="t").familiar
    return fam[:-2]


def image_id(root: Root, desc: Descriptor) -> Digest:
    """The image ID of a stored manifest or index (see the module docstring)."""
    if desc.media_type in mt.INDEX_TYPES:
        return desc.digest
    return read_manifest(root.content, desc).config.digest


def parse_created(text: str) -> float | None:
    """An RFC 3339 time as seconds since the epoch; None if it is not one."""
    if not text:
        return None
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def _created(root: Root, desc: Descriptor) -> str:
    """The image's `created` (an index: the latest of its platforms')."""
    if desc.media_type in mt.INDEX_TYPES:
        times = [read_config(root.content, read_manifest(root.content, d)).created
                 for d, _ in platforms_of(root.content, desc)]
        known = [t for t in times if parse_created(t) is not None]
        return max(known, key=lambda t: parse_created(t) or 0.0, default="")
    return read_config(root.content, read_manifest(root.content, desc)).created


def summaries(root: Root) -> list[ImageSummary]:
    out = []
    # (platforms, size, created, id) per image: names of one image share them
    known: dict[Digest, tuple[tuple[Platform, ...], int, str, str] | str] = {}
    for rec in root.images.list():
        name = Reference.parse(rec.name).familiar
        facts = known.get(rec.descriptor.digest)
        if facts is None:
            try:
                facts = (tuple(p for _, p in platforms_of(root.content, rec.descriptor)),
                         image_size(root, rec.descriptor), _created(root, rec.descriptor),
                         str(image_id(root, rec.descriptor)))
            except UserError as exc:
                facts = exc.message
            known[rec.descriptor.digest] = facts
        if isinstance(facts, str):
            out.append(ImageSummary(name=name, digest=rec.descriptor.digest, platforms=(),
                                    size=0, created="", named=rec.created, broken=facts))
            continue
        plats, size, created, ident = facts
        out.append(ImageSummary(name=name, digest=rec.descriptor.digest, platforms=plats,
                                size=size, created=created, id=ident, named=rec.created))
    return out


def image_size(root: Root, desc: Descriptor) -> int:
    store = root.content
    return sum(store.size(d) for d in reachable(store, [desc]) if store.has(d))


# -- finding an image ------------------------------------------------------------------------


def find(root: Root, image: str) -> ImageRecord:
    """The stored image `image` names: a name, `name@digest`, or an ID or digest (full,
    or a unique prefix). The record's name is "" when the image was found by digest and
    has several names (or none)."""
    try:
        ref: Reference | None = Reference.parse(image)
    except UserError:
        ref = None
    if ref is not None and ref.digest is None:
        record = root.images.find(ref)
        if record is not None:
            return record
    if ref is not None and ref.digest is not None:
        return _find_pinned(root, ref)
    m = _HEX.match(image)
    if m is not None and (image.startswith("sha256:") or ref is None or
                          len(m.group(1)) >= MIN_ID_PREFIX):
        return _find_by_digest(root, m.group(1), image)
    if ref is None:
        raise UserError(f"invalid image name or ID {image!r}", code="bad-reference")
    raise NotFoundError(f"image {ref.familiar} is not in the local image store",
                        hint="`pybuild images` lists the store; an image can also be "
                             "named by its IMAGE ID")


def _find_pinned(root: Root, ref: Reference) -> ImageRecord:
    from pybuild.resolver import pinned_descriptor

    assert ref.digest is not None
    named = [r for r in root.images.list()
             if r.descriptor.digest == ref.digest
             and Reference.parse(r.name).repository == ref.repository]
    if named:
        return named[0]
    desc = pinned_descriptor(root.content, ref.digest)
    if desc is None:
        raise NotFoundError(f"image {ref.familiar} is not in the local image store")
    return ImageRecord(name="", descriptor=desc, created="")


def _find_by_digest(root: Root, hexpart: str, text: str) -> ImageRecord:
    prefix = "sha256:" + hexpart
    matches: dict[Digest, list[ImageRecord]] = {}
    for rec in root.images.list():
        try:
            ident = image_id(root, rec.descriptor)
        except UserError:
            ident = rec.descriptor.digest
        if str(rec.descriptor.digest).startswith(prefix) or str(ident).startswith(prefix):
            matches.setdefault(rec.descriptor.digest, []).append(rec)
    if not matches and len(hexpart) == 64:
        from pybuild.resolver import pinned_descriptor

        desc = pinned_descriptor(root.content, Digest(prefix))
        if desc is not None:  # a manifest in the store that no name points at
            return ImageRecord(name="", descriptor=desc, created="")
    if not matches:
        raise NotFoundError(f"no image with ID or digest {text} in the local image store",
                            hint="`pybuild images` shows each image's IMAGE ID")
    if len(matches) > 1:
        raise UserError(f"image ID {text} is ambiguous: it matches "
                        f"{', '.join(str(d)[7:19] for d in matches)}",
                        code="ambiguous-image", hint="give more digits")
    records = next(iter(matches.values()))
    if len(records) == 1:
        return records[0]
    return ImageRecord(name="", descriptor=records[0].descriptor, created=records[0].created)


def names_of(root: Root, desc: Descriptor) -> tuple[str, ...]:
    """Every stored name of the image `desc` (familiar form)."""
    return tuple(Reference.parse(r.name).familiar for r in root.images.list()
                 if r.descriptor.digest == desc.digest)


def resolve(root: Root, image: str, platform: Platform | None = None) -> tuple[str, Descriptor,
                                                                             Descriptor]:
    """(stored name or "", stored descriptor, the platform's manifest descriptor); an
    index without a platform asked resolves for this host."""
    rec = find(root, image)
    desc = rec.descriptor
    if platform is not None or desc.media_type in mt.INDEX_TYPES:
        desc = _resolve_platform(root.content, desc, platform or host(), name=image)
    return rec.name, rec.descriptor, desc


def details(root: Root, image: str, platform: Platform | None = None) -> ImageDetails:
    rec = find(root, image)
    desc = rec.descriptor
    if platform is not None or desc.media_type in mt.INDEX_TYPES:
        desc = _resolve_platform(root.content, desc, platform or host(), name=image)
    manifest = read_manifest(root.content, desc)
    return ImageDetails(name=rec.name, descriptor=rec.descriptor, manifest_descriptor=desc,
                        manifest=manifest, config=read_config(root.content, manifest),
                        id=image_id(root, rec.descriptor), names=names_of(root, rec.descriptor),
                        named=rec.created, size=image_size(root, desc))


def history(root: Root, image: str, platform: Platform | None = None) -> list[HistoryRow]:
    """The image's history, newest first, each entry with the size of the layer it made."""
    found = details(root, image, platform)
    layers = list(found.manifest.layers)
    rows: list[HistoryRow] = []
    index = 0
    for entry in found.config.history:
        size = 0
        if not entry.empty_layer and index < len(layers):
            size = layers[index].size
            index += 1
        rows.append(HistoryRow(id="<missing>", created=entry.created,
                               created_by=entry.created_by, size=size, comment=entry.comment))
    for layer in layers[index:]:  # layers no history entry accounts for (none at all:
        # an image without history shows one row per layer, as Docker does)
        rows.append(HistoryRow(id="<missing>", created="", created_by="", size=layer.size,
                               comment=""))
    rows.reverse()
    if rows:
        top = rows[0]
        rows[0] = HistoryRow(id=str(found.id), created=top.created, created_by=top.created_by,
                             size=top.size, comment=top.comment)
    return rows


# -- naming ----------------------------------------------------------------------------------


def tag(root: Root, source: str, target: str) -> None:
    rec = find(root, source)
    ref = Reference.parse(target)
    check_pin(ref, rec.descriptor)
    created = rec.created
    if not created:
        import time

        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    root.images.put(ref, _plain(rec.descriptor), created)


def _plain(desc: Descriptor) -> Descriptor:
    return Descriptor(media_type=desc.media_type, digest=desc.digest, size=desc.size,
                      platform=desc.platform)


def check_pin(ref: Reference, desc: Descriptor) -> None:
    """A name with a digest must name that content (docker refuses digests in tags; a
    digest that is the image's own is harmless)."""
    if ref.digest is not None and ref.digest != desc.digest:
        raise UserError(f"refusing to name image {desc.digest} {ref.familiar}: the reference "
                        "pins another digest", code="bad-reference",
                        hint="give a tag, not a digest (NAME:TAG)")


def untag(root: Root, name: str) -> Descriptor:
    return root.images.remove(name).descriptor


def remove(root: Root, image: str, *, force: bool = False) -> Removed:
    """`rmi`: a name removes that name; an ID or digest removes the image's only name,
    or with `force` all of them (as `docker rmi`). The blobs go with the next prune."""
    rec = find(root, image)
    if rec.name:
        try:
            by_name = Reference.parse(image)
        except UserError:
            by_name = None
        if by_name is not None and by_name.digest is None:
            root.images.remove(rec.name)
            return Removed(untagged=(Reference.parse(rec.name).familiar,),
                           descriptor=rec.descriptor)
    names = [r.name for r in root.images.list() if r.descriptor.digest == rec.descriptor.digest]
    if len(names) > 1 and not force:
        raise UserError(f"unable to remove {image} (must be forced): the image has several "
                        f"names ({', '.join(Reference.parse(n).familiar for n in names)})",
                        code="conflict", hint="remove one name, or all with rmi -f")
    for name in names:
        root.images.remove(name)
    return Removed(untagged=tuple(Reference.parse(n).familiar for n in names),
                   descriptor=rec.descriptor)
