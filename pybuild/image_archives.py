"""Images in and out of files, as `docker load`, `docker save` and `docker import` do.

`load`: an OCI layout (directory or tar), a docker archive of Docker 25+ (also a layout)
or a classic one (`docker save` before 25, `podman save`: manifest.json and layer tars);
every image it holds, named as the archive names it (`io.containerd.image.name`, a
reference-shaped `org.opencontainers.image.ref.name`, docker's `RepoTags`) unless names
are given. `save`: several images into one docker archive. `import`: a root filesystem
tarball becomes a one-layer image.

The archive readers here are minimal and may move to `pybuild/transports` (which will
read every archive form and return the names it records).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, cast

from pybuild.digest import Digest
from pybuild.errors import IntegrityError, NotFoundError, UserError
from pybuild.local_images import check_pin, image_id, resolve
from pybuild.oci import mediatypes as mt
from pybuild.oci.config import ContainerConfig, History, ImageConfig
from pybuild.oci.descriptor import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    Descriptor,
    Index,
    Manifest,
)
from pybuild.oci.platform import Platform, host
from pybuild.oci.reference import Reference
from pybuild.root import Root

_MAX_JSON = 8 << 20
_HEX_JSON = re.compile(r"(?:^|/)(?:sha256/)?([0-9a-f]{64})(?:\.json)?$")


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadReport:
    descriptor: Descriptor  # the (first) image loaded
    names: tuple[str, ...]  # the names it was given (familiar form)
    images: tuple[tuple[Descriptor, tuple[str, ...]], ...] = ()  # every image loaded


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# -- reading archives ------------------------------------------------------------------------


class _Archive:
    """A directory or a tar file, read member by member."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tar: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}
        if not path.is_dir():
            try:
                self.tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed by close()
            except (tarfile.TarError, OSError) as exc:
                raise UserError(f"{path} is not a tar archive or a layout directory ({exc})",
                                code="bad-archive") from None
            for info in self.tar.getmembers():
                self.members[os.path.normpath(info.name).lstrip("/")] = info

    def has(self, name: str) -> bool:
        if self.tar is None:
            return (self.path / name).is_file()
        return name in self.members

    def open(self, name: str) -> IO[bytes]:
        name = os.path.normpath(name).lstrip("/")
        if self.tar is None:
            target = self.path / name
            if not target.is_file() or target.is_symlink():
                raise NotFoundError(f"{self.path} has no file {name}")
            return open(target, "rb")
        info = self.members.get(name)
        seen = 0
        while info is not None and info.islnk() and seen < 8:  # repeated layers are links
            info = self.members.get(os.path.normpath(info.linkname).lstrip("/"))
            seen += 1
        if info is None or not info.isreg():
            raise NotFoundError(f"{self.path} has no file {name}")
        f = self.tar.extractfile(info)
        assert f is not None
        return f

    def read_json(self, name: str) -> object:
        with self.open(name) as f:
            data = f.read(_MAX_JSON + 1)
        if len(data) > _MAX_JSON:
            raise UserError(f"{self.path}: {name} is too large", code="bad-archive")
        try:
            return json.loads(data)
        except ValueError as exc:
            raise UserError(f"{self.path}: {name} is not JSON ({exc})",
                            code="bad-archive") from None

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()


def _recorded_name(desc: Descriptor) -> str | None:
    """The name an index.json entry records: containerd's full name, else a
    reference-shaped ref.name (a bare `latest` names a tag, not an image)."""
    full = desc.annotation(ANNOTATION_IMAGE_NAME)
    if full:
        return full
    ref_name = desc.annotation(ANNOTATION_REF_NAME)
    if ref_name and (":" in ref_name or "/" in ref_name):
        return ref_name
    return None


def _layout_images(archive: _Archive) -> list[tuple[Digest, list[str]]]:
    """(digest, recorded names) of every image an index.json lists, in order."""
    raw = json.dumps(archive.read_json("index.json")).encode()
    index = Index.parse(raw, where=f"{archive.path} index.json")
    out: dict[Digest, list[str]] = {}
    for entry in index.manifests:
        names = out.setdefault(entry.digest, [])
        name = _recorded_name(entry)
        if name and name not in names:
            names.append(name)
    if not out:
        raise NotFoundError(f"{archive.path}: index.json lists no images")
    return list(out.items())


def _docker_tags(archive: _Archive) -> dict[str, list[str]]:
    """manifest.json's RepoTags by config path (Docker 25+ archives: the layout's images
    are named by them when index.json names nothing)."""
    if not archive.has("manifest.json"):
        return {}
    entries = archive.read_json("manifest.json")
    if not isinstance(entries, list):
        return {}
    return {str(e.get("Config", "")): [str(t) for t in e.get("RepoTags") or ()]
            for e in entries if isinstance(e, dict)}


def _load_layout(root: Root, path: Path, archive: _Archive) -> list[tuple[Descriptor,
                                                                          list[str]]]:
    from pybuild.exporters.oci_layout import read_oci_layout

    tags_by_config = _docker_tags(archive)
    out = []
    for digest, names in _layout_images(archive):
        desc = read_oci_layout(path, root.content, str(digest))
        if not names and tags_by_config and desc.media_type in mt.MANIFEST_TYPES:
            config = Manifest.parse(root.content.read(desc.digest)).config.digest
            names = tags_by_config.get(f"blobs/{config.algorithm}/{config.hex}", [])
        out.append((desc, names))
    return out


def _load_classic(root: Root, archive: _Archive) -> list[tuple[Descriptor, list[str]]]:
    """A classic docker archive: the config and layer tars as manifest.json lists them.
    As containers/image does, a manifest is made for it (OCI), with the layers stored
    uncompressed (each one checked against its diff_id as it streams in)."""
    entries = archive.read_json("manifest.json")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{archive.path}: manifest.json lists no images", code="bad-archive")
    out = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise UserError(f"{archive.path}: manifest.json entry without Config",
                            code="bad-archive")
        config_path = entry["Config"]
        with archive.open(config_path) as f:
            config_bytes = f.read(_MAX_JSON + 1)
        m = _HEX_JSON.search(config_path)
        if m is not None and Digest.from_bytes(config_bytes).hex != m.group(1):
            raise IntegrityError(f"{archive.path}: {config_path} does not hash to its name")
        config = ImageConfig.parse(config_bytes, where=f"{archive.path} {config_path}")
        layer_paths = entry.get("Layers") or []
        if len(layer_paths) != len(config.diff_ids):
            raise UserError(f"{archive.path}: {len(layer_paths)} layers for "
                            f"{len(config.diff_ids)} diff_ids", code="bad-archive")
        layers = []
        for layer_path, diff_id in zip(layer_paths, config.diff_ids, strict=True):
            size = _store_layer(root, archive, str(layer_path), diff_id)
            layers.append(Descriptor(media_type=mt.OCI_LAYER, digest=diff_id, size=size))
        config_digest = root.content.write(config_bytes)
        # An OCI manifest, like the store's own images (the config, and so the image ID,
        # is the archive's, byte for byte).
        manifest = Manifest(
            media_type=mt.OCI_MANIFEST,
            config=Descriptor(media_type=mt.OCI_CONFIG, digest=config_digest,
                              size=len(config_bytes)),
            layers=tuple(layers))
        data = manifest.encode()
        desc = Descriptor(media_type=mt.OCI_MANIFEST, digest=root.content.write(data),
                          size=len(data))
        out.append((desc, [str(t) for t in entry.get("RepoTags") or ()]))
    return out


def _store_layer(root: Root, archive: _Archive, name: str, diff_id: Digest) -> int:
    from pybuild.layers.decompress import decompressed

    if root.content.has(diff_id):
        return root.content.size(diff_id)
    with archive.open(name) as raw_io, \
            decompressed(cast(BinaryIO, raw_io), what=f"layer {name} of the archive") as plain, \
            root.content.writer() as w:
        while chunk := plain.read(1 << 20):
            w.write(chunk)
        size = w.size
        w.commit(diff_id)  # a layer that does not match its diff_id is refused
    return size


@contextlib.contextmanager
def _spooled(root: Root, stream: BinaryIO) -> Iterator[Path]:
    """A stream (stdin) as a file the readers can seek in, removed afterwards."""
    from pybuild.contexts import scratch

    with scratch(root) as work:
        path = work / "stdin.tar"
        with open(path, "wb") as f:
            while chunk := stream.read(1 << 20):
                f.write(chunk)
        yield path


def load(root: Root, source: str | Path | BinaryIO, tags: tuple[str, ...] = ()) -> LoadReport:
    """Import every image of an OCI layout or a docker archive into the store, named
    `tags` (then the archive must hold one image) or as the archive names them."""
    if not isinstance(source, str | Path):
        with _spooled(root, source) as path:
            return load(root, path, tags)
    path = Path(source)
    if not path.exists():
        raise NotFoundError(f"{path}: no such file or directory")
    archive = _Archive(path)
    try:
        if archive.has("oci-layout") and archive.has("index.json"):
            images = _load_layout(root, path, archive)
        elif archive.has("manifest.json"):
            images = _load_classic(root, archive)
        else:
            raise UserError(f"{path} is neither an OCI layout nor a docker archive (no "
                            "oci-layout, index.json or manifest.json)", code="bad-archive")
    finally:
        archive.close()
    if tags:
        if len(images) > 1:
            raise UserError(f"{path} holds {len(images)} images; -t names one",
                            code="ambiguous-image", hint="load it without -t: each image "
                            "gets the names the archive records")
        images = [(images[0][0], list(tags))]
    if not any(names for _, names in images):
        raise UserError(f"{path} does not name its image; give a name with -t NAME",
                        code="unnamed-image")
    loaded = []
    created = _now()
    for desc, names in images:
        refs = [Reference.parse(n) for n in names]
        for ref in refs:
            check_pin(ref, desc)
        plain = Descriptor(media_type=desc.media_type, digest=desc.digest, size=desc.size,
                           platform=desc.platform)
        for ref in refs:
            root.images.put(ref, plain, created)
        loaded.append((plain, tuple(r.familiar for r in refs)))
    return LoadReport(descriptor=loaded[0][0], names=loaded[0][1], images=tuple(loaded))


# -- save ------------------------------------------------------------------------------------


def save(root: Root, images: list[str], dest: str | BinaryIO, *,
         platform: Platform | None = None) -> list[tuple[Descriptor, tuple[str, ...]]]:
    """`docker save -o FILE IMAGE...`: one docker archive (also an OCI layout) holding
    every image, each with the names asked for it (an ID or digest names none); layers
    as the store keeps them (uncompressed), as `docker save` writes them. A
    multi-platform image keeps all its platforms in the layout's index.json (as Docker
    25+ saves it); manifest.json, which holds one platform, lists this host's (or
    `platform`'s, which then is all that is saved)."""
    from pybuild.exporters.oci_layout import (
        ArchiveWriter,
        LayoutName,
        blob_path,
        image_blobs,
        index_bytes,
        layout_file_bytes,
        named_descriptor,
        open_archive_dest,
    )

    # stored (or platform) descriptor -> (its docker manifest.json image, names)
    chosen: dict[Digest, tuple[Descriptor, Descriptor, list[Reference]]] = {}
    for image in images:
        name, stored, desc = resolve(root, image, platform or host())
        top = desc if platform is not None else stored
        found = chosen.setdefault(top.digest, (top, desc, []))
        if name and _names_image(image):
            ref = Reference.parse(name)
            if ref not in found[2]:
                found[2].append(ref)
    blobs: dict[Digest, Descriptor] = {}
    docker_manifest = []
    entries = []
    saved = []
    for top, single, refs in chosen.values():
        try:
            parts = image_blobs(root.content, top)
        except NotFoundError:  # an index of which the store has one platform (a pull)
            top, parts = single, image_blobs(root.content, single)
        for blob in parts:
            blobs.setdefault(blob.digest, blob)
        manifest = Manifest.parse(root.content.read(single.digest, what="manifest"))
        docker_manifest.append({
            "Config": blob_path(manifest.config.digest),
            "RepoTags": [r.familiar for r in refs],
            "Layers": [blob_path(d.digest) for d in manifest.layers]})
        plain = Descriptor(media_type=top.media_type, digest=top.digest, size=top.size)
        entries += [named_descriptor(plain, LayoutName(ref_name=r.tag, image_name=str(r)))
                    for r in refs] or [plain]
        saved.append((top, tuple(r.familiar for r in refs)))
    with open_archive_dest(dest) as out:
        archive = ArchiveWriter(out)
        archive.add_blobs(root.content, tuple(blobs.values()))
        archive.add_bytes("index.json", index_bytes(entries))
        archive.add_bytes("manifest.json",
                          json.dumps(docker_manifest, separators=(",", ":")).encode())
        archive.add_bytes("oci-layout", layout_file_bytes(), mode=0o444)
        archive.close()
    return saved


def _names_image(text: str) -> bool:
    """Whether `text`, as given to save, is a name (not an ID or a digest)."""
    try:
        ref = Reference.parse(text)
    except UserError:
        return False
    return ref.digest is None and not re.fullmatch(r"(sha256:)?[0-9a-f]{4,64}", text)


# -- import ----------------------------------------------------------------------------------

# What `docker import --change` accepts (moby's validCommitCommands).
IMPORT_CHANGES = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "HEALTHCHECK", "LABEL", "ONBUILD",
                  "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")


def _open_rootfs(stream: IO[bytes]) -> IO[bytes]:
    """The tar inside a plain, gzip, zstd, bzip2 or xz stream (docker import's set)."""
    from pybuild.layers.decompress import decompressed

    # Bounded as layers are: a decompression bomb is refused, not imported.
    return decompressed(stream, archive_formats=True,  # type: ignore[arg-type]
                        what="the root filesystem archive")


def apply_changes(config: ContainerConfig, changes: tuple[str, ...]) -> ContainerConfig:
    """`--change`: Dockerfile instructions applied to the image's config, as `docker
    import -c` applies them (no variable expansion)."""
    import dataclasses

    from pybuild.frontend.dockerfile.parser import parse
    from pybuild.frontend.instructions import types as ins
    from pybuild.frontend.instructions.parse import parse_instruction

    for change in changes:
        keyword = change.strip().split(None, 1)[0].upper() if change.strip() else ""
        if keyword not in IMPORT_CHANGES:
            raise UserError(f"--change {change!r}: {keyword or 'an empty change'} is not a "
                            "change import accepts", code="bad-change",
                            hint=f"use one of {', '.join(IMPORT_CHANGES)}")
        nodes = parse(change + "\n", "--change").ast.children
        if len(nodes) != 1:
            raise UserError(f"--change {change!r}: one instruction per --change",
                            code="bad-change")
        inst = parse_instruction(nodes[0], "--change")
        shell = ["/bin/sh", "-c"]
        match inst:
            case ins.CmdInstruction():
                cmd = [*shell, " ".join(inst.cmd_line)] if inst.prepend_shell else inst.cmd_line
                config = dataclasses.replace(config, cmd=tuple(cmd))
            case ins.EntrypointInstruction():
                ep: tuple[str, ...] = inst.cmd_line or ()
                if inst.prepend_shell and ep:
                    ep = (*shell, " ".join(ep))
                config = dataclasses.replace(config, entrypoint=tuple(ep))
            case ins.EnvInstruction():
                env = config.env_dict()
                env.update((kv.key, kv.value) for kv in inst.pairs)
                config = dataclasses.replace(config, env=tuple(f"{k}={v}"
                                                               for k, v in env.items()))
            case ins.LabelInstruction():
                labels = dict(config.labels)
                labels.update((kv.key, kv.value) for kv in inst.pairs)
                config = dataclasses.replace(config, labels=tuple(sorted(labels.items())))
            case ins.ExposeInstruction():
                ports = set(config.exposed_ports)
                ports.update(p if "/" in p else f"{p}/tcp" for p in inst.ports)
                config = dataclasses.replace(config, exposed_ports=tuple(sorted(ports)))
            case ins.VolumeInstruction():
                config = dataclasses.replace(config, volumes=tuple(sorted(
                    {*config.volumes, *inst.volumes})))
            case ins.WorkdirInstruction():
                config = dataclasses.replace(config, working_dir=inst.path)
            case ins.UserInstruction():
                config = dataclasses.replace(config, user=inst.user)
            case ins.StopSignalInstruction():
                config = dataclasses.replace(config, stop_signal=inst.signal)
            case ins.OnbuildInstruction():
                config = dataclasses.replace(config, on_build=(*config.on_build,
                                                               inst.expression))
            case ins.HealthcheckInstruction():
                from pybuild.oci.config import Healthcheck

                config = dataclasses.replace(config, healthcheck=Healthcheck(
                    test=tuple(inst.test), interval=inst.interval, timeout=inst.timeout,
                    start_period=inst.start_period, start_interval=inst.start_interval,
                    retries=inst.retries))
            case _:
                raise UserError(f"--change {change!r} is not supported", code="bad-change")
    return config


def import_rootfs(root: Root, source: str | Path | BinaryIO, names: tuple[str, ...], *,
                  changes: tuple[str, ...] = (), message: str = "",
                  platform: Platform | None = None) -> Descriptor:
    """`docker import`: a root filesystem tarball (plain or compressed) becomes the one
    layer of a new image, stored uncompressed, as it is (device nodes and owners
    included); `changes` set its config."""
    from pybuild.contexts import is_archive, read_head

    refs = [Reference.parse(n) for n in names]
    for ref in refs:
        if ref.digest is not None:
            raise UserError(f"-t {ref.familiar}: an imported image is named by tag",
                            code="bad-reference")
    config_base = apply_changes(ContainerConfig(), changes)
    where = str(source) if isinstance(source, str | Path) else "-"
    with contextlib.ExitStack() as stack:
        if isinstance(source, str | Path):
            try:
                raw: IO[bytes] = stack.enter_context(open(source, "rb"))
            except OSError as exc:
                raise UserError(f"cannot read {source}: {exc.strerror}") from None
        else:
            raw = source
        tar = stack.enter_context(_open_rootfs(raw))
        head = read_head(tar, 512)
        if not is_archive(head):
            raise UserError(f"{where} is not a tar archive (of a root filesystem)",
                            code="bad-archive")
        with root.content.writer() as w:
            w.write(head)
            while chunk := tar.read(1 << 20):
                w.write(chunk)
            size = w.size
            diff_id = w.commit()
    plat = platform or host()
    created = _now()
    config = ImageConfig(
        architecture=plat.architecture, os=plat.os, variant=plat.variant, created=created,
        config=config_base, diff_ids=(diff_id,),
        history=(History(created=created, comment=message or f"Imported from {where}"),),
        extra_json=json.dumps({"comment": message or f"Imported from {where}"},
                              sort_keys=True, separators=(",", ":")))
    config_bytes = config.encode()
    config_desc = Descriptor(media_type=mt.OCI_CONFIG, digest=root.content.write(config_bytes),
                             size=len(config_bytes))
    manifest = Manifest(media_type=mt.OCI_MANIFEST, config=config_desc,
                        layers=(Descriptor(media_type=mt.OCI_LAYER, digest=diff_id,
                                           size=size),))
    data = manifest.encode()
    desc = Descriptor(media_type=mt.OCI_MANIFEST, digest=root.content.write(data),
                      size=len(data))
    for ref in refs:
        root.images.put(ref, desc, created)
    return desc


__all__ = ["IMPORT_CHANGES", "LoadReport", "apply_changes", "image_id", "import_rootfs",
           "load", "save"]
