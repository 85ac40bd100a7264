"""Images in and out of files, as `docker load`, `docker save` and `docker import` do.

`load`: an OCI layout (directory or tar), a docker archive of Docker 25+ (also a layout)
or a classic one (`docker save` before 25, `podman save`: manifest.json and layer tars);
every image it holds, named as the archive names it (`io.containerd.image.name`, a
reference-shaped `org.opencontainers.image.ref.name`, docker's `RepoTags`) unless names
are given. `save`: several images into one docker archive. `import`: a root filesystem
tarball becomes a one-layer image. Archives are read and written by
`pybuild.transports` (every form it knows, and the names each records); what is here is
`docker`'s behaviour around them: stdin spooled to a file, names given or recorded,
several images in one archive.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from pybuild.digest import Digest
from pybuild.errors import NotFoundError, UserError
from pybuild.local_images import check_pin, image_id, resolve
from pybuild.oci import mediatypes as mt
from pybuild.oci.config import ContainerConfig, History, ImageConfig
from pybuild.oci.descriptor import Descriptor, Manifest
from pybuild.oci.platform import Platform, host
from pybuild.oci.reference import Reference
from pybuild.root import Root


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadReport:
    descriptor: Descriptor  # the (first) image loaded
    names: tuple[str, ...]  # the names it was given (familiar form)
    images: tuple[tuple[Descriptor, tuple[str, ...]], ...] = ()  # every image loaded


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


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
    from pybuild.transports.endpoints import location_of, read_all

    if not isinstance(source, str | Path):
        with _spooled(root, source) as path:
            return load(root, path, tags)
    path = Path(source)
    if not path.exists():
        raise NotFoundError(f"{path}: no such file or directory")
    images = [(i.descriptor, list(i.names)) for i in read_all(location_of(path), root.content)]
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
    from pybuild.content.walk import walk
    from pybuild.transports.docker_archive import ArchivedImage, write_docker_archives

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
    archived = []
    for top, single, refs in chosen.values():
        try:
            walk(root.content, top, strict=True, what="the saved image")
        except NotFoundError:  # an index of which the store has one platform (a pull)
            top = single
        plain = Descriptor(media_type=top.media_type, digest=top.digest, size=top.size)
        archived.append(ArchivedImage(top=plain, manifest=single,
                                      names=tuple(str(r) for r in refs)))
    write_docker_archives(root.content, archived, dest)
    return [(a.top, tuple(Reference.parse(n).familiar for n in a.names)) for a in archived]


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
