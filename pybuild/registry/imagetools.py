"""Manifest lists without a rebuild, as `docker buildx imagetools` makes them.

`inspect`: a remote image's manifest or index, its raw bytes, and (when asked) the image
config of each platform. `create`: an index assembled from images already pushed (by digest,
typically one per platform from native CI runners with `push-by-digest=true`), written to one
or more tags: the sources' platforms come from their descriptors or, when missing, their
configs; sources that are indexes contribute their entries; every child is copied into each
target repository first (cross-repository mounts on the same registry, a download and an
upload from another one), then the index is put by tag. Flags and behaviour follow buildx's
`commands/imagetools/create.go` and `util/imagetools/create.go`: `--append` adds the target's
current entries first, `--annotation TYPE[PLATFORM]:KEY=VALUE` with the types `index` and
`manifest-descriptor`, `--platform` filters, `--prefer-index=false` copies a single manifest
as it is, `--dry-run` only returns the index.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from pybuild.content.store import ContentStore
from pybuild.digest import Digest, is_digest
from pybuild.errors import IntegrityError, UserError
from pybuild.oci import mediatypes as mt
from pybuild.oci.descriptor import Descriptor, Index, Manifest
from pybuild.oci.platform import Platform
from pybuild.oci.reference import Reference
from pybuild.registry.auth import repository_scope
from pybuild.registry.blobindex import open_index
from pybuild.registry.client import RegistryClient
from pybuild.registry.endpoints import push_endpoint
from pybuild.registry.options import RegistryOptions
from pybuild.registry.pull import (
    _is_foreign,
    _is_index,
    _is_manifest,
    download_blob,
    fetch_manifest,
    run_all,
)
from pybuild.registry.push import _Pusher

MAX_CONFIG_SIZE = 8 << 20
ATTESTATION_TYPE = "vnd.docker.reference.type"
ATTESTATION_DIGEST = "vnd.docker.reference.digest"
ANNOTATION_TYPES = ("index", "manifest-descriptor")


# --- JSON as buildx writes it (Go's field order, two-space indent) -------------------------


def _platform_json(p: Platform) -> dict[str, Any]:
    out: dict[str, Any] = {"architecture": p.architecture, "os": p.os}
    if p.os_version:
        out["os.version"] = p.os_version
    if p.os_features:
        out["os.features"] = list(p.os_features)
    if p.variant:
        out["variant"] = p.variant
    return out


def descriptor_json(d: Descriptor) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": d.media_type, "digest": str(d.digest), "size": d.size}
    if d.urls:
        out["urls"] = list(d.urls)
    if d.annotations:
        out["annotations"] = dict(sorted(d.annotations))
    if d.platform is not None:
        out["platform"] = _platform_json(d.platform)
    if d.artifact_type:
        out["artifactType"] = d.artifact_type
    return out


def encode_index(media_type: str, manifests: Sequence[Descriptor],
                 annotations: Sequence[tuple[str, str]] = ()) -> bytes:
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type,
                           "manifests": [descriptor_json(d) for d in manifests]}
    if annotations:
        doc["annotations"] = dict(sorted(annotations))
    return json.dumps(doc, indent=2).encode()


# --- inspect ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Inspected:
    reference: Reference
    descriptor: Descriptor
    raw: bytes
    index: Index | None = None
    configs: tuple[tuple[str, dict[str, Any]], ...] = ()  # platform -> image config


async def _fetch_json_blob(client: RegistryClient, repository: str, desc: Descriptor,
                           what: str) -> dict[str, Any]:
    url = await client.url(f"/v2/{repository}/blobs/{desc.digest}")
    _, data = await client.request_bytes(
        "GET", url, repository=repository, scopes=(repository_scope(repository, "pull"),),
        limit=MAX_CONFIG_SIZE, what=f"{what} {desc.digest}", digest=desc.digest)
    if Digest.from_bytes(data) != desc.digest or len(data) != desc.size:
        raise IntegrityError(f"{what} {client.domain}/{repository}@{desc.digest}: the "
                             "registry sent bytes that do not match its descriptor")
    try:
        value = json.loads(data)
    except ValueError:
        raise UserError(f"{what} {desc.digest} of {client.domain}/{repository} is not JSON",
                        code="bad-manifest") from None
    if not isinstance(value, dict):
        raise UserError(f"{what} {desc.digest} is not a JSON object", code="bad-manifest")
    return value


async def _config_of(client: RegistryClient, repository: str, manifest_desc: Descriptor
                     ) -> dict[str, Any]:
    _, data = await fetch_manifest(client, repository, manifest_desc.digest,
                                   expected=manifest_desc)
    manifest = Manifest.parse(data, where=f"manifest {manifest_desc.digest}")
    return await _fetch_json_blob(client, repository, manifest.config, "image config")


def _is_attestation(d: Descriptor) -> bool:
    return d.annotation(ATTESTATION_TYPE) == "attestation-manifest"


async def inspect(ref: Reference, *, options: RegistryOptions | None = None,
                  with_configs: bool = False) -> Inspected:
    """The remote image (or index) `ref` names; with `with_configs`, each platform's config."""
    async with RegistryClient(ref.domain, options) as client:
        desc, raw = await fetch_manifest(client, ref.path, ref.digest or ref.tag or "latest")
        index = Index.parse(raw, where=f"index {ref}") if _is_index(desc.media_type) else None
        configs: list[tuple[str, dict[str, Any]]] = []
        if with_configs:
            if index is None:
                configs.append(("", await _config_of(client, ref.path, desc)))
            else:
                wanted = [d for d in index.manifests if _is_manifest(d.media_type)
                          and d.platform is not None and not _is_attestation(d)]
                found = await run_all([_config_of(client, ref.path, d) for d in wanted])
                configs = [(str(d.platform), c) for d, c in zip(wanted, found, strict=True)]
    return Inspected(reference=ref, descriptor=desc, raw=raw, index=index,
                     configs=tuple(configs))


# --- create ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """A reference, a bare digest (in the target's repository) or a descriptor."""

    reference: Reference | None = None
    descriptor: Descriptor | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> Source:
        text = text.strip()
        if is_digest(text):
            return cls(digest=Digest(text))
        if text.startswith("sha256"):
            raise UserError(f"invalid source {text!r}: not a valid digest", code="bad-source")
        if text.startswith("{"):
            try:
                raw = json.loads(text)
            except ValueError as exc:
                raise UserError(f"invalid source descriptor: {exc}", code="bad-source") from None
            if isinstance(raw, dict) and raw.get("schemaVersion"):
                raise UserError("invalid source: expected an OCI content descriptor, got a "
                                "manifest or index", code="bad-source")
            if isinstance(raw, dict):
                raw.setdefault("mediaType", "")
                raw.setdefault("size", 0)
            return cls(descriptor=Descriptor.from_json(raw, where="source descriptor"))
        try:
            return cls(reference=Reference.parse(text))
        except UserError as exc:
            raise UserError(f"invalid source {text!r}: valid sources are digests, references "
                            f"and descriptors ({exc.message})", code="bad-source") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Annotation:
    kind: str  # "index" | "manifest-descriptor"
    key: str
    value: str
    platform: Platform | None = None

    @classmethod
    def parse(cls, text: str) -> Annotation:
        """buildx's `TYPE[PLATFORM]:KEY=VALUE` (`buildflags.ParseAnnotations`)."""
        spec, eq, value = text.partition("=")
        if not eq:
            raise UserError(f"invalid annotation {text!r}, expected key=value",
                            code="bad-annotation")
        kind, colon, key = spec.partition(":")
        if not colon:
            raise UserError(f"annotation {text!r} has no type: imagetools create takes "
                            "index:KEY=VALUE or manifest-descriptor[PLATFORM]:KEY=VALUE (buildx "
                            "refuses untyped ones here too)", code="bad-annotation")
        platform = None
        if kind.endswith("]") and "[" in kind:
            kind, _, plat = kind[:-1].partition("[")
            platform = Platform.parse(plat)
        if kind in ("manifest", "index-descriptor"):
            raise UserError(f"{kind!r} annotations cannot be set when creating an index from "
                            "existing images (their manifests are not rewritten)",
                            code="bad-annotation")
        if kind not in ANNOTATION_TYPES:
            raise UserError(f"unknown annotation type {kind!r} (use "
                            f"{' or '.join(ANNOTATION_TYPES)})", code="bad-annotation")
        if not key:
            raise UserError(f"invalid annotation {text!r}: empty key", code="bad-annotation")
        return cls(kind=kind, key=key, value=value, platform=platform)


@dataclass(frozen=True, slots=True, kw_only=True)
class Combined:
    data: bytes
    descriptor: Descriptor
    children: tuple[tuple[Descriptor, Reference], ...]  # each entry and where to read it


def _repo(ref: Reference) -> Reference:
    return Reference(domain=ref.domain, path=ref.path)


def _for_domain(options: RegistryOptions | None, domain: str,
                home: str | None) -> RegistryOptions | None:
    """Explicit --creds belong to the targets' registry (`home`): never sent to a source on
    another one, which gets its credentials from the auth files."""
    if options is None or options.creds is None or home is None or domain == home:
        return options
    return replace(options, creds=None)


def complete_sources(sources: Sequence[Source], targets: Sequence[Reference]
                     ) -> list[tuple[Reference, Descriptor | None]]:
    """Every source as (where to read it, the descriptor given): a bare digest or descriptor
    lives in the only repository the command names (buildx's rule)."""
    repos = {_repo(t) for t in targets} | {_repo(s.reference) for s in sources if s.reference}
    default = next((s.reference for s in sources if s.reference), None) or (
        targets[0] if targets else None)
    out: list[tuple[Reference, Descriptor | None]] = []
    for s in sources:
        if s.reference is not None:
            out.append((s.reference, None))
            continue
        if len(repos) != 1 or default is None:
            raise UserError("cannot infer the repository of a source given as a digest or "
                            "descriptor: the command names "
                            + ("several repositories" if repos else "none"), code="bad-source")
        digest = s.digest or (s.descriptor.digest if s.descriptor else None)
        assert digest is not None
        out.append((Reference(domain=default.domain, path=default.path, digest=digest),
                    s.descriptor))
    return out


def _merge(found: Descriptor, given: Descriptor | None) -> Descriptor:
    if given is None:
        return found
    if given.size and given.size != found.size:
        raise IntegrityError(f"source {found.digest}: the descriptor says {given.size} bytes, "
                             f"the registry has {found.size}")
    out = found
    if given.media_type:
        out = replace(out, media_type=given.media_type)
    if given.annotations:
        out = replace(out, annotations=given.annotations)
    if given.platform is not None:
        out = replace(out, platform=given.platform)
    return out


async def _resolve_source(ref: Reference, given: Descriptor | None,
                          options: RegistryOptions | None, home: str | None = None
                          ) -> tuple[Descriptor, bytes, Reference]:
    async with RegistryClient(ref.domain, _for_domain(options, ref.domain, home)) as client:
        desc, data = await fetch_manifest(client, ref.path, ref.digest or ref.tag or "latest")
        desc = _merge(desc, given)
        if desc.media_type in mt.MANIFEST_TYPES and (
                desc.platform is None or not desc.platform.os or not desc.platform.architecture):
            config = await _config_of(client, ref.path, desc)
            os_name, arch = config.get("os"), config.get("architecture")
            if not isinstance(os_name, str) or not isinstance(arch, str) or not (
                    os_name and arch):
                raise UserError(f"{ref}: the image config names no os/architecture, so its "
                                "platform is unknown; give it in a descriptor source",
                                code="bad-source")
            variant = config.get("variant")
            desc = replace(desc, platform=Platform.normalize(
                os=os_name, architecture=arch,
                variant=variant if isinstance(variant, str) else ""))
    return desc, data, ref


def _apply_annotations(descs: list[Descriptor], annotations: Sequence[Annotation]
                       ) -> list[tuple[str, str]]:
    index_annotations: list[tuple[str, str]] = []
    for a in annotations:
        if a.kind == "index":
            index_annotations.append((a.key, a.value))
            continue
        for i, d in enumerate(descs):
            if a.platform is None or (d.platform is not None and a.platform.matches(d.platform)
                                      and str(a.platform) == str(d.platform)):
                descs[i] = d.with_annotations(**{a.key: a.value})
    return index_annotations


def _filter_platforms(entries: list[tuple[Descriptor, Reference]],
                      platforms: Sequence[Platform]) -> list[tuple[Descriptor, Reference]]:
    if not platforms:
        return entries
    kept: list[tuple[Descriptor, Reference]] = []
    for p in platforms:
        matches = [e for e in entries if e[0].platform is not None and not _is_attestation(e[0])
                   and p.matches(e[0].platform)]
        if not matches:
            raise UserError(f"no source has platform {p}", code="bad-platform")
        kept.extend(m for m in matches if m not in kept)
    digests = {str(d.digest) for d, _ in kept}
    kept += [e for e in entries if _is_attestation(e[0])
             and e[0].annotation(ATTESTATION_DIGEST) in digests and e not in kept]
    return kept


async def combine(sources: Sequence[Source], targets: Sequence[Reference], *,
                  annotations: Sequence[Annotation] = (), platforms: Sequence[Platform] = (),
                  prefer_index: bool = True, options: RegistryOptions | None = None
                  ) -> Combined:
    """The index (or, for one manifest with prefer_index=False, the manifest itself)."""
    if not sources:
        raise UserError("no sources specified", code="bad-source")
    where = complete_sources(sources, targets)
    home = targets[0].domain if targets else None
    resolved = await run_all([_resolve_source(r, g, options, home) for r, g in where])
    if len(resolved) == 1 and not annotations and not platforms:
        desc, data, ref = resolved[0]
        if _is_index(desc.media_type):
            index = Index.parse(data, where=f"index {ref}")
            return Combined(data=data, descriptor=desc,
                            children=tuple((d, ref) for d in index.manifests))
        if not prefer_index:
            return Combined(data=data, descriptor=desc, children=())
    entries: list[tuple[Descriptor, Reference]] = []
    seen: dict[Digest, int] = {}

    def add(d: Descriptor, ref: Reference) -> None:
        if d.media_type in ("application/vnd.docker.distribution.manifest.v1+json",
                            "application/vnd.docker.distribution.manifest.v1+prettyjws"):
            raise UserError("schema1 manifests are not allowed in manifest lists",
                            code="bad-source")
        if d.digest in seen:  # buildx merges a repeated entry's platform and annotations
            i = seen[d.digest]
            old = entries[i][0]
            merged = dict(old.annotations)
            merged.update(dict(d.annotations))
            entries[i] = (replace(old, platform=d.platform or old.platform,
                                  annotations=tuple(sorted(merged.items()))), ref)
            return
        seen[d.digest] = len(entries)
        entries.append((d, ref))

    for desc, data, ref in resolved:
        if _is_index(desc.media_type):
            for d in Index.parse(data, where=f"index {ref}").manifests:
                add(d, ref)
        else:
            add(desc, ref)
    entries = _filter_platforms(entries, platforms)
    descs = [d for d, _ in entries]
    docker = all(d.media_type.startswith("application/vnd.docker.") for d in descs)
    media_type = mt.DOCKER_MANIFEST_LIST if docker else mt.OCI_INDEX
    if docker and annotations:
        raise UserError("annotations need an OCI index, but every source is a Docker manifest "
                        "(a Docker manifest list has no annotations)", code="bad-annotation")
    index_annotations = _apply_annotations(descs, annotations)
    data = encode_index(media_type, descs, index_annotations)
    top = Descriptor(media_type=media_type, digest=Digest.from_bytes(data), size=len(data))
    return Combined(data=data, descriptor=top,
                    children=tuple((d, ref) for d, (_, ref) in zip(descs, entries, strict=True)))


async def _copy_child(pusher: _Pusher, child: Descriptor, source: Reference,
                      options: RegistryOptions | None, store: ContentStore) -> None:
    """Put one manifest (and its blobs) into the pusher's repository, by digest."""
    target = pusher.client
    same_registry = source.domain == target.domain
    async with RegistryClient(source.domain, _for_domain(options, source.domain,
                                                         target.domain)) as src:
        desc, data = await fetch_manifest(src, source.path, child.digest, expected=replace(
            child, media_type=child.media_type if (_is_manifest(child.media_type)
                                                   or _is_index(child.media_type)) else ""))
        if _is_index(desc.media_type):
            raise UserError(f"{source.repository}@{child.digest} is itself an index; nested "
                            "indexes are not copied", code="bad-source")
        manifest = Manifest.parse(data, where=f"manifest {source.repository}@{child.digest}")

        async def fetch(blob: Descriptor) -> None:
            await download_blob(src, source.path, blob, store)

        pusher.fetch = fetch
        pusher.mount_from = [source.path] if same_registry and source.path != pusher.repository \
            else []
        blobs = [b for b in (manifest.config, *manifest.layers) if not _is_foreign(b)]
        await run_all([pusher.blob(b) for b in blobs])
        await pusher.manifest(desc, data, "")


@dataclass(frozen=True, slots=True, kw_only=True)
class Created:
    descriptor: Descriptor
    data: bytes
    pushed: tuple[str, ...] = ()  # REF@DIGEST for each target


async def create(sources: Sequence[Source], targets: Sequence[Reference], store: ContentStore,
                 *, annotations: Sequence[Annotation] = (),
                 platforms: Sequence[Platform] = (), append: bool = False,
                 prefer_index: bool = True, dry_run: bool = False,
                 options: RegistryOptions | None = None) -> Created:
    """Assemble the index and (unless `dry_run`) push it, with its children, to every target.
    `store` holds blobs that must travel between registries."""
    if not targets and not dry_run:
        raise UserError("can't push with no tags specified, please set --tag or --dry-run",
                        code="bad-target")
    for t in targets:
        if t.digest is not None:
            raise UserError(f"target {t} must be a tag, not a digest", code="bad-target")
    if append and targets:
        sources = [Source(reference=targets[0]), *sources]
    combined = await combine(sources, targets, annotations=annotations, platforms=platforms,
                             prefer_index=prefer_index, options=options)
    if dry_run:
        return Created(descriptor=combined.descriptor, data=combined.data)
    base = options or RegistryOptions()
    pushed: list[str] = []
    by_repo: dict[Reference, list[Reference]] = {}
    for t in targets:
        by_repo.setdefault(_repo(t), []).append(t)
    for repo, tags in by_repo.items():
        endpoint = push_endpoint(repo, base.registries)
        opts = replace(base, insecure=True) if endpoint.insecure else base
        index = open_index(opts.blob_index)
        async with RegistryClient(repo.domain, opts) as client:
            pusher = _Pusher(client, repo.path, store, (), None, index)
            children = combined.children or ((combined.descriptor, _source_of(sources)),)
            if combined.children:
                for child, source in children:
                    await _copy_child(pusher, child, source, options, store)
            else:
                await _copy_blobs_only(pusher, combined, _source_of(sources), options, store)
            if index is not None:
                await asyncio.to_thread(index.record, client.domain, repo.path,
                                        pusher.confirmed)
            for tag in tags:
                digest = await pusher.manifest(combined.descriptor, combined.data, tag.tag)
                pushed.append(f"{tag.familiar}@{digest}")
    return Created(descriptor=combined.descriptor, data=combined.data, pushed=tuple(pushed))


def _source_of(sources: Sequence[Source]) -> Reference:
    ref = sources[0].reference
    if ref is None:
        raise UserError("a single-manifest copy needs its source as a reference",
                        code="bad-source")
    return ref


async def _copy_blobs_only(pusher: _Pusher, combined: Combined, source: Reference,
                           options: RegistryOptions | None, store: ContentStore) -> None:
    """`--prefer-index=false` with one manifest: its blobs go over, the manifest is put by
    tag afterwards (as is, byte for byte)."""
    manifest = Manifest.parse(combined.data, where=f"manifest {source}")
    async with RegistryClient(source.domain, _for_domain(options, source.domain,
                                                         pusher.client.domain)) as src:
        async def fetch(blob: Descriptor) -> None:
            await download_blob(src, source.path, blob, store)

        pusher.fetch = fetch
        pusher.mount_from = [source.path] if source.domain == pusher.client.domain else []
        await run_all([pusher.blob(b) for b in (manifest.config, *manifest.layers)
                       if not _is_foreign(b)])
