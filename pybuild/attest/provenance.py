"""SLSA provenance of a build, in BuildKit's shapes (v0.2 and v1 predicates).

The build collects a `ProvenanceInput` (what it resolved, what it ran, when); `predicate`
turns it into the predicate BuildKit would write for the same build, `statement` wraps it
for an image manifest. Shapes follow BuildKit's solver/llbsolver/provenance (types.go,
predicate.go, the v0.2 <-> v1 conversions) and its mode handling:

- mode=min: frontend, non-build-arg/label args, locals, materials, times; no secrets/ssh.
- mode=max: also `build-arg:*`/`label:*` args, the secret and ssh ids used, the build
  steps (`buildConfig.llbDefinition`, `digestMapping`), the Dockerfile source and its
  step locations, and the layer each step produced (`…#metadata`.layers).

Secrets: secret *values* are never an input here. Build args whose names look
secret-bearing (BuildKit's SecretsUsedInArgOrEnv rule: `*_TOKEN`, `PASSWORD`, `API_KEY`,
...) or whose values equal a value the caller lists in `secret_values` are dropped from the
args, and their values are blanked in the steps' environments; the serialised predicate is
then checked for every listed value and refused if one appears anywhere.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pybuild.attest.intoto import STATEMENT_V01, Statement, StatementType, Subject
from pybuild.attest.purl import image_purl
from pybuild.digest import Digest
from pybuild.errors import InternalError, UserError
from pybuild.llb.definition import Definition
from pybuild.llb.ops import encode as encode_op
from pybuild.oci.descriptor import Descriptor
from pybuild.oci.platform import Platform

PREDICATE_V02 = "https://slsa.dev/provenance/v0.2"
PREDICATE_V1 = "https://slsa.dev/provenance/v1"
BUILD_TYPE_V02 = "https://mobyproject.org/buildkit@v1"
BUILD_TYPE_V1 = "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md"
METADATA_KEY = "https://mobyproject.org/buildkit@v1#metadata"
HERMETIC_KEY = "https://mobyproject.org/buildkit@v1#hermetic"
Mode = Literal["min", "max"]
Version = Literal["v0.2", "v1"]

_SECRET = re.compile(r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|"
                     r"passwd|secret|token)(?:_|$)")
_ALLOW = re.compile(r"(?i)(?:_|^)(?:public|file|version)(?:_|$)")
_MIN_SECRET = 4  # shorter "secrets" would match everywhere; they are not checked for
_HOST_ARGS = ("cgroup-parent", "image-resolve-mode", "platform", "cache-imports")


def secret_bearing(name: str) -> bool:
    """True for a build-arg name BuildKit's linter flags as carrying a secret."""
    return bool(_SECRET.search(name)) and not _ALLOW.search(name)


# -- inputs --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageMaterial:
    """A base image (FROM, COPY --from=IMAGE, --build-context name=docker-image://)."""

    ref: str  # as resolved, without the digest: "docker.io/library/busybox:latest"
    digest: Digest  # the manifest (or index) digest that was pulled
    platform: Platform | None = None
    local: bool = False  # from an OCI layout (oci-layout://): a pkg:oci purl


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpMaterial:
    """An `ADD https://…` source with the sha256 of what was downloaded."""

    url: str
    digest: Digest


@dataclass(frozen=True, slots=True, kw_only=True)
class GitMaterial:
    """A git source (`ADD git@…`, a git build context) at the commit it resolved to."""

    url: str
    commit: str  # 40 hex (sha1) or 64 hex (sha256 object format)


Material = ImageMaterial | HttpMaterial | GitMaterial


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceFile:
    """A build definition file (the Dockerfile) as the frontend read it."""

    filename: str
    data: bytes
    language: str = "Dockerfile"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvenanceInput:
    """Everything a build records for its provenance; frozen and free of secret values."""

    started_on: datetime
    finished_on: datetime
    builder_platform: Platform  # where the build ran: environment.platform
    invocation_id: str = ""
    builder_id: str = ""  # --attest type=provenance,builder-id=…
    frontend: str = "dockerfile.v0"
    # The frontend attributes as BuildKit names them: ("build-arg:FOO", "bar"),
    # ("label:x", "y"), ("target", "prod"), ("context:name", "docker-image://…"), ...
    args: tuple[tuple[str, str], ...] = ()
    filename: str = "Dockerfile"  # configSource.entryPoint / path
    config_source_uri: str = ""  # a remote context (git / https URL), credentials removed
    config_source_digest: tuple[tuple[str, str], ...] = ()
    locals: tuple[str, ...] = ("context", "dockerfile")  # local sources the build read
    materials: tuple[Material, ...] = ()
    secrets: tuple[tuple[str, bool], ...] = ()  # (id, optional) of the secrets RUN mounted
    ssh: tuple[tuple[str, bool], ...] = ()  # (id, optional) of the ssh sockets RUN mounted
    vcs: tuple[tuple[str, str], ...] = ()  # ("source", url), ("revision", commit)
    network_access: bool = True  # some RUN step had a network
    incomplete_materials: bool = False  # some input could not be recorded as a material
    reproducible: bool = False  # SOURCE_DATE_EPOCH was set
    dockerfile_version: str = ""
    # mode=max only:
    definition: Definition | None = None  # the op DAG that was solved
    sources: tuple[SourceFile, ...] = ()
    layers: tuple[tuple[Digest, tuple[Descriptor, ...]], ...] = ()  # op digest -> its layers
    # Values that must not appear in the provenance (secret contents, tokens). Never
    # written; used to drop build args that carry them and to check the output.
    secret_values: tuple[str, ...] = ()


# -- conversion ----------------------------------------------------------------------------


def _time(moment: datetime) -> str:
    text = moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return text


def _digest_set(digest: Digest) -> dict[str, str]:
    return {digest.algorithm: digest.hex}


def materials(inp: ProvenanceInput) -> list[dict[str, Any]]:
    """BuildKit's slsaMaterials: images, then git, then http, in the order collected."""
    images = [m for m in inp.materials if isinstance(m, ImageMaterial)]
    gits = [m for m in inp.materials if isinstance(m, GitMaterial)]
    https = [m for m in inp.materials if isinstance(m, HttpMaterial)]
    out: list[dict[str, Any]] = []
    for image in images:
        uri = image_purl(image.ref, image.platform, kind="oci" if image.local else "docker")
        out.append({"uri": uri, "digest": _digest_set(image.digest)})
    for git in gits:
        algo = "sha256" if len(git.commit) == 64 else "sha1"
        out.append({"uri": git.url, "digest": {algo: git.commit}})
    for http in https:
        out.append({"uri": http.url, "digest": _digest_set(http.digest)})
    return out


def _secret_values(inp: ProvenanceInput) -> list[str]:
    return [v for v in inp.secret_values if len(v) >= _MIN_SECRET]


def _redacted_args(inp: ProvenanceInput, mode: Mode) -> tuple[dict[str, str], bool]:
    """(args to record, whether they are complete)."""
    values = _secret_values(inp)
    out: dict[str, str] = {}
    complete = bool(inp.frontend)
    for key, value in inp.args:
        if key in _HOST_ARGS or key.startswith(("attest:", "vcs:")) or key in (
            "filename", "context", "contextkey"
        ):
            continue
        name = key.partition(":")[2] if key.startswith("build-arg:") else ""
        if name and (secret_bearing(name) or any(v in value for v in values)):
            complete = False
            continue
        if mode == "min" and key.startswith(("build-arg:", "label:")):
            complete = False
            continue
        out[key] = value
    return out, complete


def _parameters(inp: ProvenanceInput, mode: Mode) -> tuple[dict[str, Any], bool]:
    args, complete = _redacted_args(inp, mode)
    params: dict[str, Any] = {"frontend": inp.frontend} if inp.frontend else {}
    if args:
        params["args"] = args
    if mode == "max" and inp.secrets:
        params["secrets"] = [{"id": i, **({"optional": True} if o else {})}
                             for i, o in inp.secrets]
    if mode == "max" and inp.ssh:
        params["ssh"] = [{"id": i, **({"optional": True} if o else {})} for i, o in inp.ssh]
    if inp.locals:
        params["locals"] = [{"name": n} for n in inp.locals]
    return params, complete


def _secret_env_names(inp: ProvenanceInput) -> set[str]:
    return {k.partition(":")[2] for k, _ in inp.args
            if k.startswith("build-arg:") and secret_bearing(k.partition(":")[2])}


def _redact_op(op_json: Any, names: set[str], values: list[str]) -> Any:
    """An op's JSON with the values of secret-bearing env entries blanked."""
    if isinstance(op_json, dict):
        out = {k: _redact_op(v, names, values) for k, v in op_json.items()}
        env = out.get("env")
        if isinstance(env, list):
            out["env"] = [_redact_env(e, names, values) for e in env]
        return out
    if isinstance(op_json, list):
        return [_redact_op(v, names, values) for v in op_json]
    return op_json


def _redact_env(entry: Any, names: set[str], values: list[str]) -> Any:
    if not isinstance(entry, str):
        return entry
    name, sep, value = entry.partition("=")
    if sep and (name in names or secret_bearing(name) or any(v in value for v in values)):
        return f"{name}="
    return entry


def build_steps(definition: Definition, inp: ProvenanceInput
                ) -> tuple[list[dict[str, Any]], dict[str, str], dict[Digest, int]]:
    """BuildKit's toBuildSteps: (steps, digestMapping, op digest -> step index)."""
    names = _secret_env_names(inp)
    values = _secret_values(inp)
    order = definition.topological()
    index = {d: i for i, d in enumerate(order)}
    steps: list[dict[str, Any]] = []
    for d in order:
        op = definition.ops[d]
        body = json.loads(encode_op(op))
        step: dict[str, Any] = {
            "id": f"step{index[d]}",
            "op": {"kind": body["kind"], "op": _redact_op(body["op"], names, values)},
        }
        inputs = [f"step{index[i.op]}:{i.index}" for i in op.inputs()]
        if inputs:
            step["inputs"] = inputs
        steps.append(step)
    if definition.output is not None:
        steps.append({"id": f"step{len(order)}", "op": {},
                      "inputs": [f"step{index[definition.output.op]}:"
                                 f"{definition.output.index}"]})
    mapping = {str(d): f"step{i}" for d, i in index.items()}
    return steps, mapping, index


def _buildkit_metadata(inp: ProvenanceInput, mode: Mode,
                       index: dict[Digest, int]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if inp.vcs:
        meta["vcs"] = dict(inp.vcs)
    if mode != "max":
        return meta
    if inp.sources:
        locations: dict[str, Any] = {}
        if inp.definition is not None:
            for d, m in inp.definition.metadata.items():
                if m.filename and m.start_line and d in index:
                    locations[f"step{index[d]}"] = {"locations": [{"ranges": [{
                        "start": {"line": m.start_line},
                        "end": {"line": m.end_line or m.start_line},
                    }]}]}
        source: dict[str, Any] = {"infos": [
            {"filename": s.filename, "language": s.language,
             "data": base64.b64encode(s.data).decode("ascii")} for s in inp.sources
        ]}
        if locations:
            source["locations"] = locations
        meta["source"] = source
    layers = {f"step{index[d]}:0": [[desc.to_json() for desc in descs]]
              for d, descs in inp.layers if d in index and descs}
    if layers:
        meta["layers"] = layers
    return meta


def predicate(inp: ProvenanceInput, *, mode: Mode = "max", version: Version = "v0.2"
              ) -> dict[str, Any]:
    """The SLSA provenance predicate BuildKit would write for this build."""
    if mode not in ("min", "max"):
        raise InternalError(f"provenance mode {mode!r}")
    params, params_complete = _parameters(inp, mode)
    mats = materials(inp)
    incomplete = inp.incomplete_materials or bool(inp.locals)
    hermetic = not incomplete and not inp.network_access
    steps: list[dict[str, Any]] = []
    mapping: dict[str, str] = {}
    index: dict[Digest, int] = {}
    if mode == "max" and inp.definition is not None:
        steps, mapping, index = build_steps(inp.definition, inp)
    build_config = {"llbDefinition": steps, "digestMapping": mapping} if steps else None
    meta = _buildkit_metadata(inp, mode, index)
    config_source: dict[str, Any] = {}
    if inp.config_source_uri:
        config_source["uri"] = inp.config_source_uri
    if inp.config_source_digest:
        config_source["digest"] = dict(inp.config_source_digest)
    if version == "v1":
        out = _v1(inp, params, params_complete, mats, config_source, build_config, meta,
                  incomplete, hermetic)
    else:
        out = _v02(inp, params, params_complete, mats, config_source, build_config, meta,
                   incomplete, hermetic)
    check_no_secrets(out, inp.secret_values)
    return out


def _v02(inp: ProvenanceInput, params: dict[str, Any], params_complete: bool,
         mats: list[dict[str, Any]], config_source: dict[str, Any],
         build_config: dict[str, Any] | None, meta: dict[str, Any], incomplete: bool,
         hermetic: bool) -> dict[str, Any]:
    if inp.filename:
        config_source["entryPoint"] = inp.filename
    environment: dict[str, Any] = {"platform": str(inp.builder_platform)}
    if inp.dockerfile_version:
        environment["dockerfileVersion"] = inp.dockerfile_version
    metadata: dict[str, Any] = {
        "buildStartedOn": _time(inp.started_on),
        "buildFinishedOn": _time(inp.finished_on),
        "completeness": {"parameters": params_complete, "environment": True,
                         "materials": not incomplete},
        "reproducible": inp.reproducible,
        METADATA_KEY: meta,
    }
    if inp.invocation_id:
        metadata["buildInvocationID"] = inp.invocation_id
    if hermetic:
        metadata[HERMETIC_KEY] = True
    out: dict[str, Any] = {
        "builder": {"id": inp.builder_id},
        "buildType": BUILD_TYPE_V02,
        "invocation": {"configSource": config_source, "parameters": params,
                       "environment": environment},
        "metadata": metadata,
    }
    if mats:
        out["materials"] = mats
    if build_config is not None:
        out["buildConfig"] = build_config
    return out


def _v1(inp: ProvenanceInput, params: dict[str, Any], params_complete: bool,
        mats: list[dict[str, Any]], config_source: dict[str, Any],
        build_config: dict[str, Any] | None, meta: dict[str, Any], incomplete: bool,
        hermetic: bool) -> dict[str, Any]:
    if inp.filename:
        config_source["path"] = inp.filename
    internal: dict[str, Any] = {"builderPlatform": str(inp.builder_platform)}
    if build_config is not None:
        internal["buildConfig"] = build_config
    if inp.dockerfile_version:
        internal["dockerfileVersion"] = inp.dockerfile_version
    definition: dict[str, Any] = {
        "buildType": BUILD_TYPE_V1,
        "externalParameters": {"configSource": config_source, "request": params},
        "internalParameters": internal,
    }
    if mats:
        definition["resolvedDependencies"] = mats
    metadata: dict[str, Any] = {
        "startedOn": _time(inp.started_on),
        "finishedOn": _time(inp.finished_on),
        "buildkit_metadata": meta,
        "buildkit_completeness": {"request": params_complete,
                                  "resolvedDependencies": not incomplete},
    }
    if inp.invocation_id:
        metadata["invocationID"] = inp.invocation_id
    if hermetic:
        metadata["buildkit_hermetic"] = True
    if inp.reproducible:
        metadata["buildkit_reproducible"] = True
    return {"buildDefinition": definition,
            "runDetails": {"builder": {"id": inp.builder_id}, "metadata": metadata}}


def check_no_secrets(value: Any, secrets: Sequence[str]) -> None:
    """Refuse a document in which a listed secret value appears (as text, JSON-escaped, or
    inside the base64 of a source file)."""
    text = json.dumps(value, ensure_ascii=False)
    decoded = text + "".join(_decoded_sources(value))
    for secret in secrets:
        if len(secret) >= _MIN_SECRET and (secret in decoded
                                          or json.dumps(secret)[1:-1] in text):
            raise UserError(
                "a secret value would appear in the provenance attestation",
                code="secret-in-provenance",
                hint="the Dockerfile or a build argument contains it; build with "
                     "--provenance=mode=min, or pass the value as a --secret only",
            )


def _decoded_sources(value: Any) -> list[str]:
    """The text of every `data` (base64 source file) in a predicate."""
    out: list[str] = []
    if isinstance(value, dict):
        data = value.get("data")
        if isinstance(data, str) and "filename" in value:
            try:
                out.append(base64.b64decode(data).decode("utf-8", "replace"))
            except ValueError:
                pass
        for v in value.values():
            out.extend(_decoded_sources(v))
    elif isinstance(value, list):
        for v in value:
            out.extend(_decoded_sources(v))
    return out


def predicate_type(version: Version) -> str:
    return PREDICATE_V1 if version == "v1" else PREDICATE_V02


def statement(inp: ProvenanceInput, subjects: Sequence[Subject], *, mode: Mode = "max",
              version: Version = "v0.2", statement_type: StatementType = STATEMENT_V01
              ) -> Statement:
    """The in-toto statement of this build's provenance for `subjects` (see intoto)."""
    return Statement.of(predicate_type(version), predicate(inp, mode=mode, version=version),
                        subjects, statement_type=statement_type)
