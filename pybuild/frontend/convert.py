"""Dockerfile -> op DAG + image config (BuildKit's dockerfile2llb, dispatch by dispatch).

The order of work is BuildKit's `toDispatchState`:

1. parse, split into meta ARGs and stages, lint the stage names;
2. compute the global scope: automatic platform args, TARGETSTAGE, meta ARGs (build args
   replace defaults without evaluating them);
3. expand each FROM (image and `--platform`) with the global scope only, link each stage to
   an earlier stage of that name, apply named contexts;
4. resolve `COPY --from` / `RUN --mount from=` references (stage name, stage index, or an
   implicit image stage), reject circular references;
5. resolve the base images of the stages the target needs, then run ONBUILD trigger
   discovery (triggers may add dependencies, so 4-5 repeat until stable);
6. dispatch the needed stages in file order, each instruction against the stage's
   environment at that point.

Divergences from BuildKit, on purpose (see also `docs` in the report of issue 3):
- `ADD <http(s) URL>` / `ADD <git ref>` become `https://…` / `git://…` source ops that
  pybuild fetches itself (`builder/sources.py`), with BuildKit's attrs (`http.filename`,
  `http.perm`, `http.checksum`; `git.fullurl`, `git.ref`, `git.subdir`,
  `git.keepgitdir`, `git.checksum`); the git ref and subdir are attrs, not one
  `ref:subdir` string;
- the context source carries no FollowPaths (it is not part of the op identity here);
- linting is minimal: the rules implemented are listed in `_Linter.RULES`.
"""

from __future__ import annotations

import posixpath
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pybuild.digest import Digest
from pybuild.errors import DockerfileSyntaxError, PybuildError, SourceLocation, UserError
from pybuild.frontend import instructions as ins
from pybuild.frontend.runmount import RunMount, parse_mount
from pybuild.llb import (
    CacheMountOpts,
    Chown,
    CopyAction,
    Definition,
    DefinitionBuilder,
    ExecOp,
    FileOp,
    Input,
    MkdirAction,
    MkfileAction,
    Mount,
    OpMetadata,
    SecretOpts,
    SourceOp,
    SSHOpts,
)
from pybuild.oci.config import DEFAULT_PATH, ContainerConfig, Healthcheck, History, ImageConfig
from pybuild.oci.platform import Platform
from pybuild.oci.platform import host as host_platform

DEFAULT_SHELL = ("/bin/sh", "-c")
WINDOWS_SHELL = ("cmd", "/S", "/C")
HISTORY_COMMENT = "buildkit.dockerfile.v0"
EMPTY_IMAGE = "scratch"
CONTEXT_SOURCE = "local://context"
# Proxy build args reach every RUN without an ARG, outside the cache key (llb.ProxyEnv).
PROXY_ARGS = ("http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy")
# Args that never reach a RUN environment even when declared (BuildKit's nonEnvArgs).
NON_ENV_ARGS = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})
_COMMON_IMAGES = ("alpine", "busybox", "centos", "debian", "golang", "ubuntu", "fedora")


# --- what the frontend needs from the outside ------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedImage:
    name: str  # canonical reference string without digest, e.g. docker.io/library/busybox:latest
    digest: Digest  # the platform manifest digest
    config: ImageConfig


class ImageMetaResolver(Protocol):
    """reference + platform -> digest + config. `ref` is a normalized image reference
    (`docker.io/library/busybox:latest`), or `oci-layout://DIR@DIGEST` / `oci-layout://DIR:TAG`
    for an OCI layout named context."""

    def resolve(self, ref: str, platform: Platform) -> ResolvedImage: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class NamedContext:
    """A `--build-context name=VALUE`: kind "image" (value: a reference), "local" (value: a
    directory) or "oci-layout" (value: `DIR@DIGEST` or `DIR:TAG`)."""

    kind: str
    value: str

    @classmethod
    def parse(cls, text: str) -> NamedContext:
        if text.startswith("docker-image://"):
            value = text.removeprefix("docker-image://")
            kind = "image"
        elif text.startswith("oci-layout://"):
            value = text.removeprefix("oci-layout://")
            kind = "oci-layout"
        elif text.startswith("local:"):
            value = text.removeprefix("local:")
            kind = "local"
        elif "://" in text or text.startswith(("git@", "input:", "target:")):
            raise UserError(f"named context {text!r} is not supported yet",
                            hint="use docker-image://REF, oci-layout://DIR@DIGEST or a "
                                 "local directory")
        else:
            value, kind = text, "local"
        if not value:
            raise UserError(f"invalid named context {text!r}: empty value")
        return cls(kind=kind, value=value)


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontendOptions:
    dockerfile: bytes
    filename: str = "Dockerfile"
    build_args: tuple[tuple[str, str], ...] = ()
    target: str = ""
    platform: Platform | None = None  # target platform; None = the build platform
    build_platform: Platform | None = None  # None = host
    labels: tuple[tuple[str, str], ...] = ()
    dockerignore: tuple[str, ...] = ()  # patterns applied to the main context
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    network: str = "default"
    named_contexts: tuple[tuple[str, NamedContext], ...] = ()
    multi_platform: bool = False  # prefix progress names with the platform


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontendResult:
    definition: Definition
    config: ImageConfig  # diff_ids are filled in by the exporter from the solved layers
    stage_name: str
    warnings: tuple[str, ...] = ()


# --- state -----------------------------------------------------------------------------


class _Env:
    """llb.EnvList: re-setting a key moves it to the end; lookups see the latest value."""

    __slots__ = ("items",)

    def __init__(self, items: dict[str, str] | None = None) -> None:
        self.items: dict[str, str] = dict(items or {})

    def set(self, key: str, value: str) -> None:
        self.items.pop(key, None)
        self.items[key] = value

    def get(self, key: str) -> str | None:
        return self.items.get(key)

    def as_list(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.items.items()]

    def copy(self) -> _Env:
        return _Env(self.items)


@dataclass(slots=True)
class _Image:
    """The mutable image config of a stage (dockerspec.DockerOCIImage)."""

    os: str = "linux"
    architecture: str = ""
    variant: str = ""
    os_version: str = ""
    author: str = ""
    created: str = ""
    config: ContainerConfig = field(default_factory=ContainerConfig)
    history: list[History] = field(default_factory=list)

    def clone(self) -> _Image:
        return _Image(self.os, self.architecture, self.variant, self.os_version, self.author,
                      self.created, self.config, list(self.history))

    def set(self, **changes: Any) -> None:
        self.config = replace(self.config, **changes)


def _empty_image(p: Platform) -> _Image:
    env = () if p.os == "windows" else (f"PATH={DEFAULT_PATH}",)
    return _Image(os=p.os, architecture=p.architecture, variant=p.variant,
                  os_version=p.os_version, config=ContainerConfig(env=env, working_dir="/"))


@dataclass(slots=True, eq=False)
class _Cmd:
    inst: ins.Instruction
    sources: list[_Stage | None] = field(default_factory=list)
    on_build: bool = False


@dataclass(slots=True, eq=False)
class _Stage:
    """BuildKit's dispatchState."""

    base_name: str  # expanded (later normalized) FROM value, or the --from reference
    loc: ins.Loc
    from_: ins.FromInstruction | None = None  # None for implicit image stages
    name: str = ""  # lower-cased stage name
    stage_name: str = ""  # for progress output: name, stage-N, or "" for a single stage
    raw: list[ins.Instruction] = field(default_factory=list)  # the stage's instructions
    commands: list[_Cmd] = field(default_factory=list)
    base: _Stage | None = None
    platform: Platform | None = None
    deps: list[tuple[_Stage, ins.Instruction]] = field(default_factory=list)
    unregistered: bool = False
    dispatched: bool = False
    resolved: bool = False
    onbuild_init: bool = False
    named: bool = False  # replaced by a named context
    # llb state
    state: Input | None = None
    env: _Env = field(default_factory=_Env)
    dir: str = "/"
    user: str = ""
    # image + build args
    image: _Image = field(default_factory=_Image)
    build_args: list[tuple[str, str | None]] = field(default_factory=list)
    workdir_set: bool = False
    cmd_set: bool = False
    trackers: dict[str, ins.Loc] = field(default_factory=dict)
    cmd_total: int = 0
    cmd_index: int = 0
    cmd_is_onbuild: bool = False
    ignore_cache: bool = False

    def add_dep(self, dep: _Stage, inst: ins.Instruction) -> None:
        if not any(d is dep for d, _ in self.deps):
            self.deps.append((dep, inst))


# --- lint ------------------------------------------------------------------------------


class _Linter:
    """A minimal `# check=` linter. Rules implemented: see RULES."""

    RULES = (
        "StageNameCasing", "FromAsCasing", "NoEmptyContinuation",
        "ConsistentInstructionCasing", "DuplicateStageName", "ReservedStageName",
        "JSONArgsRecommended", "MaintainerDeprecated", "WorkdirRelativePath",
        "MultipleInstructionsDisallowed", "LegacyKeyValueFormat", "ExposeProtoCasing",
        "SecretsUsedInArgOrEnv",
    )

    def __init__(self, spec: str | None, filename: str) -> None:
        self.skip: set[str] = set()
        self.skip_all = False
        self.error = False
        self.filename = filename
        self.found: list[tuple[str, str, int]] = []
        if spec:
            self._parse(spec)

    def _parse(self, spec: str) -> None:
        for part in spec.split(";"):
            part = part.strip()
            if not part:
                continue
            key, eq, value = part.partition("=")
            key = key.strip().lower()
            if not eq:
                raise UserError(f"failed to parse check options: invalid check option "
                                f"{part!r}")
            if key == "skip":
                for rule in value.split(","):
                    rule = rule.strip()
                    if rule.lower() == "all":
                        self.skip_all = True
                    elif rule:
                        self.skip.add(rule)
            elif key == "error":
                v = value.strip().lower()
                if v not in ("true", "false", "1", "0", "t", "f"):
                    raise UserError(f"failed to parse check options: invalid error value "
                                    f"{value!r}")
                self.error = v in ("true", "1", "t")
            elif key == "experimental":
                continue
            else:
                raise UserError(f"failed to parse check options: unknown option {key!r}")

    def run(self, rule: str, message: str, line: int) -> None:
        if self.skip_all or rule in self.skip:
            return
        self.found.append((rule, message, line))

    def warnings(self) -> list[str]:
        return [f"{self.filename}:{line}: {rule}: {msg}" for rule, msg, line in self.found]

    def check(self) -> None:
        if self.error and self.found:
            rules = []
            for rule, _, _ in self.found:
                if rule not in rules:
                    rules.append(rule)
            _, msg, line = self.found[0]
            raise UserError(f"lint violation found for rules: {', '.join(rules)}",
                            code="lint", location=SourceLocation(self.filename, line, line),
                            hint=msg)


# --- entry point -----------------------------------------------------------------------


def compile_dockerfile(opts: FrontendOptions, resolver: ImageMetaResolver) -> FrontendResult:
    """Compile a Dockerfile. Raises UserError (with a location) for any bad input."""
    try:
        return _Converter(opts, resolver).run()
    except PybuildError:
        raise
    except RecursionError:
        raise UserError("the Dockerfile is nested too deeply to process",
                        location=SourceLocation(opts.filename, 1, 1)) from None


class _Converter:
    def __init__(self, opts: FrontendOptions, resolver: ImageMetaResolver) -> None:
        self.opts = opts
        self.resolver = resolver
        self.dag = DefinitionBuilder()
        self.build_args = dict(opts.build_args)
        self.build_platform = opts.build_platform or host_platform()
        self.implicit_target = opts.platform is None
        self.target_platform = opts.platform or self.build_platform
        self.named = dict(opts.named_contexts)
        self.states: list[_Stage] = []
        self.by_name: dict[str, _Stage] = {}
        self.context_input: Input | None = None
        self.warnings: list[str] = []
        self.epoch = self._epoch()
        self.cache_ns = self.build_args.get("BUILDKIT_CACHE_MOUNT_NS", "")
        self.hostname = self.build_args.get("BUILDKIT_SANDBOX_HOSTNAME", "")
        self.multi_platform = opts.multi_platform or self.build_args.get(
            "BUILDKIT_MULTI_PLATFORM", "").lower() in ("1", "true", "t")

    # -- small helpers ------------------------------------------------------------------

    def _epoch(self) -> str:
        raw = self.build_args.get("SOURCE_DATE_EPOCH", "")
        if not raw:
            return ""
        try:
            sec = int(raw)
        except ValueError:
            raise UserError(f"invalid SOURCE_DATE_EPOCH: {raw}") from None
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sec))

    @staticmethod
    def _fail(loc: ins.Loc, message: str, hint: str | None = None) -> UserError:
        return loc.error(message, hint=hint, cls=UserError)

    def _lex(self, **flags: bool) -> Any:
        from pybuild.frontend.shell.lex import ShellLex

        return ShellLex(self.escape, **flags)

    def _expand(self, loc: ins.Loc, word: str, env: _Env | dict[str, str]) -> str:
        items = env.items if isinstance(env, _Env) else env
        try:
            return str(self.lex.process_word(word, items))
        except PybuildError as exc:
            raise self._fail(loc, exc.message) from None

    def _context(self) -> Input:
        if self.context_input is None:
            attrs: tuple[tuple[str, str], ...] = ()
            if self.opts.dockerignore:
                attrs = (("exclude", "\n".join(self.opts.dockerignore)),)
            self.context_input = self.dag.add(
                SourceOp(identifier=CONTEXT_SOURCE, attrs=attrs),
                OpMetadata(description="[internal] load build context"),
            )
        return self.context_input

    def _scratch_input(self) -> Input:
        """An empty filesystem usable as a copy source."""
        return self.dag.add(FileOp(base=None, actions=(MkdirAction(path="/", mode=0o755),)))

    # -- top level ----------------------------------------------------------------------

    def run(self) -> FrontendResult:
        from pybuild.frontend.dockerfile.parser import parse

        opts = self.opts
        if not opts.dockerfile:
            raise UserError("the Dockerfile cannot be empty",
                            location=SourceLocation(opts.filename, 1, 1),
                            hint="add at least a FROM instruction")
        parsed = parse(opts.dockerfile, opts.filename)
        self.escape = parsed.escape_token
        self.lex = self._lex()
        check = self.build_args.get("BUILDKIT_DOCKERFILE_CHECK")
        self.lint = _Linter(check if check is not None else parsed.directives.check,
                            opts.filename)
        syntax = parsed.directives.syntax
        if syntax and self.build_args.get("BUILDKIT_SYNTAX") != "dockerfile.v0":
            line = parsed.directives.lines.get("syntax", 1)
            self.warnings.append(f"{opts.filename}:{line}: ignoring the syntax directive "
                                 f"{syntax!r}: pybuild always uses its built-in Dockerfile "
                                 "frontend")
        for w in parsed.warnings:
            if "continuation" in w.message.lower():
                self.lint.run("NoEmptyContinuation", "Empty continuation line", w.line)

        meta_args: list[ins.ArgInstruction] = []
        stage_insts: list[tuple[ins.FromInstruction, list[ins.Instruction]]] = []
        for node in parsed.ast.children:
            inst = ins.parse_instruction(node, opts.filename)
            if not stage_insts and isinstance(inst, ins.ArgInstruction):
                meta_args.append(inst)
            elif isinstance(inst, ins.FromInstruction):
                stage_insts.append((inst, []))
            elif not stage_insts:
                raise inst.loc.error("no build stage in current context",
                                     hint="only ARG may come before the first FROM")
            else:
                stage_insts[-1][1].append(inst)
        if not stage_insts:
            raise DockerfileSyntaxError("dockerfile contains no stages to build",
                                        location=SourceLocation(opts.filename, 1, 1),
                                        hint="add a FROM instruction, e.g. FROM busybox")
        self._lint_stages(stage_insts)

        target_name = opts.target or stage_insts[-1][0].stage_name or "default"
        self.global_args = self._default_args(target_name)
        self._build_meta_args(meta_args)

        for i, (from_, commands) in enumerate(stage_insts):
            self._add_stage(i, from_, commands)

        target = self._find_target()
        for d in list(self.states):
            if d.unregistered:
                continue
            d.commands = [self._to_command(d, c) for c in d.raw]
        self._check_cycles()
        if len(self.states) == 1:
            self.states[0].stage_name = ""

        while True:
            reachable = self._reachable(target)
            self._resolve(reachable)
            if not self._init_onbuild(reachable):
                break

        reachable = self._reachable(target)
        for d in list(self.states):
            if d not in reachable or d.dispatched:
                continue
            self._dispatch_stage(d)
        self.lint.check()
        return self._result(target)

    # -- args ---------------------------------------------------------------------------

    def _default_args(self, target_name: str) -> _Env:
        b, t = self.build_platform, self.target_platform
        pairs = (
            ("BUILDPLATFORM", _format_platform(b)), ("BUILDOS", b.os),
            ("BUILDOSVERSION", b.os_version), ("BUILDARCH", b.architecture),
            ("BUILDVARIANT", b.variant),
            ("TARGETPLATFORM", _format_platform_all(t)), ("TARGETOS", t.os),
            ("TARGETOSVERSION", t.os_version), ("TARGETARCH", t.architecture),
            ("TARGETVARIANT", t.variant), ("TARGETSTAGE", target_name),
        )
        env = _Env()
        for key, value in pairs:
            env.set(key, self.build_args.get(key, value))
        return env

    def _build_meta_args(self, meta: list[ins.ArgInstruction]) -> None:
        env = self.global_args
        for inst in meta:
            for decl in inst.args:
                if decl.key in self.build_args:
                    value: str | None = self.build_args[decl.key]
                elif decl.value is not None:
                    value = self._expand(inst.loc, decl.value, env)
                else:
                    value = None
                if value is not None:
                    env.set(decl.key, value)

    # -- stages -------------------------------------------------------------------------

    def _lint_stages(self, stages: list[tuple[ins.FromInstruction, list[ins.Instruction]]]
                     ) -> None:
        seen: set[str] = set()
        lower = upper = 0
        names = []
        for from_, commands in stages:
            names.append((from_.name, from_.loc))
            names.extend((c.name, c.loc) for c in commands)
        for n, _ in names:
            if n == n.lower():
                lower += 1
            elif n == n.upper():
                upper += 1
        majority_lower = lower > upper
        for n, loc in names:
            want = n.lower() if majority_lower else n.upper()
            if n != want:
                casing = "lowercase" if majority_lower else "uppercase"
                self.lint.run("ConsistentInstructionCasing",
                              f"Command '{n}' should match the case of the command majority "
                              f"({casing})", loc.start_line)
        for from_, _ in stages:
            loc = from_.loc
            if from_.as_word:
                words = loc.text.split()
                name_raw = words[-1] if words else from_.stage_name
                if name_raw != name_raw.lower():
                    self.lint.run("StageNameCasing", f"Stage name '{name_raw}' should be "
                                  "lowercase", loc.start_line)
                kw, as_ = from_.name, from_.as_word
                if kw in (kw.lower(), kw.upper()):
                    want = as_.lower() if kw == kw.lower() else as_.upper()
                    if as_ != want:
                        self.lint.run("FromAsCasing", f"'{as_}' and '{kw}' keywords' casing "
                                      "do not match", loc.start_line)
            name = from_.stage_name
            if not name:
                continue
            if name in ("context", "scratch"):
                self.lint.run("ReservedStageName", f"'{name}' is reserved and should not be "
                              "used as a stage name", loc.start_line)
            if name in seen:
                self.lint.run("DuplicateStageName", f"Duplicate stage name '{name}', stage "
                              "names should be unique", loc.start_line)
            seen.add(name)

    def _add_state(self, d: _Stage) -> None:
        self.states.append(d)
        base = self.by_name.get(d.base_name)
        if base is not None and not d.named:
            d.base = base
        if d.name:
            self.by_name[d.name] = d

    def _add_stage(self, i: int, from_: ins.FromInstruction,
                   commands: list[ins.Instruction]) -> None:
        loc = from_.loc
        base_name = self._expand(loc, from_.image, self.global_args)
        if not base_name:
            raise self._fail(loc, f"base name ({from_.image}) should not be blank",
                             hint="check the ARG used in FROM: it expands to nothing")
        d = _Stage(base_name=base_name, loc=loc, from_=from_, name=from_.stage_name,
                   stage_name=from_.stage_name, raw=list(commands))
        if from_.platform:
            text = self._expand(loc, from_.platform, self.global_args)
            if not text:
                msg = ins.with_suggestion(f"empty platform value from expression "
                                          f"{from_.platform}", from_.platform.strip("${}"),
                                          list(self.global_args.items))
                raise self._fail(loc, msg)
            try:
                d.platform = Platform.parse(text)
            except UserError as exc:
                raise self._fail(loc, f"failed to parse platform {from_.platform}: "
                                 f"{exc.message}") from None
        if d.name and d.name in self.named and d.name not in ("scratch", "context"):
            self._apply_named_stage(d, self.named[d.name])
            self._add_state(d)
            return
        if not d.name:
            d.stage_name = f"stage-{i}"
        self._add_state(d)
        total = 1 if d.base_name != EMPTY_IMAGE and d.base is None else 0
        total += sum(1 for c in commands if isinstance(
            c, ins.CopyInstruction | ins.RunInstruction | ins.WorkdirInstruction))
        d.cmd_total = total
        d.ignore_cache = self.opts.no_cache or (
            bool(self.opts.no_cache_filter) and d.name in self.opts.no_cache_filter)

    def _find_target(self) -> _Stage:
        if not self.opts.target:
            return self.states[-1]
        found = self.by_name.get(self.opts.target.lower())
        if found is None:
            names = [s.name for s in self.states if s.name]
            raise UserError(ins.with_suggestion(
                f'target stage "{self.opts.target}" could not be found', self.opts.target,
                names), code="bad-target",
                hint="stages: " + (", ".join(names) or "(no named stages)"))
        return found

    def _to_command(self, d: _Stage, inst: ins.Instruction, on_build: bool = False) -> _Cmd:
        cmd = _Cmd(inst=inst, on_build=on_build)
        if isinstance(inst, ins.CopyInstruction) and inst.from_:
            ref = inst.from_
            if "$" in ref:
                try:
                    expanded = str(self.lex.process_word(ref, {}))
                except PybuildError:
                    expanded = ""
                if expanded != ref:
                    raise self._fail(inst.loc, "variable expansion is not supported for --from, "
                                     "define a new stage with FROM using ARG from global scope "
                                     "as a workaround")
            if re.fullmatch(r"[+-]?\d+", ref):
                idx = int(ref)
                if idx < 0 or idx >= len(self.states):
                    raise self._fail(inst.loc, f"invalid stage index {idx}",
                                     hint=f"there are {len(self.states)} stages, numbered "
                                          f"from 0")
                src = self.states[idx]
            else:
                src = self.by_name.get(ref.lower()) or self._implicit(ref, inst.loc)
            cmd.sources = [src]
        elif isinstance(inst, ins.RunInstruction):
            for spec in inst.mounts:
                m = parse_mount(spec, None)
                if not m.from_:
                    cmd.sources.append(None)
                    continue
                cmd.sources.append(self.by_name.get(m.from_.lower())
                                   or self._implicit(m.from_, inst.loc))
        for dep in cmd.sources:
            if dep is not None:
                d.add_dep(dep, inst)
        return cmd

    def _implicit(self, ref: str, loc: ins.Loc) -> _Stage:
        st = _Stage(base_name=ref, loc=loc, unregistered=True)
        self._add_state(st)
        return st

    def _check_cycles(self) -> None:
        visited: set[int] = set()
        path: set[int] = set()

        def visit(s: _Stage, current: list[ins.Instruction]) -> list[ins.Instruction] | None:
            if id(s) in visited:
                return None
            visited.add(id(s))
            path.add(id(s))
            for dep, inst in s.deps:
                nxt = [*current, inst]
                if id(dep) in path:
                    return nxt
                found = visit(dep, nxt)
                if found is not None:
                    return found
            path.discard(id(s))
            return None

        for s in self.states:
            cmds = visit(s, [])
            if cmds is not None:
                loc = cmds[-1].loc
                raise self._fail(loc, f"circular dependency detected on stage: {s.stage_name}",
                                 hint="a stage cannot (indirectly) copy or mount from itself")

    def _reachable(self, target: _Stage) -> list[_Stage]:
        seen: set[int] = set()
        stack = [target]
        while stack:
            s = stack.pop()
            if id(s) in seen:
                continue
            seen.add(id(s))
            if s.base is not None:
                stack.append(s.base)
            stack.extend(dep for dep, _ in s.deps)
        return [s for s in self.states if id(s) in seen]

    # -- base images --------------------------------------------------------------------

    def _normalize(self, name: str, loc: ins.Loc) -> tuple[str, str]:
        """(full reference, familiar name for named-context lookup)."""
        from pybuild.oci.reference import Reference

        try:
            ref = Reference.parse(name)
        except UserError as exc:
            raise self._fail(loc, f'failed to parse stage name "{name}": {exc.message}',
                             hint="a FROM or --from value must be an earlier stage name or an "
                                  "image reference") from None
        familiar = ref.familiar
        if ref.digest is None:
            familiar = familiar.removesuffix(":latest")
        return str(ref), familiar

    def _resolve(self, reachable: list[_Stage]) -> None:
        for d in reachable:
            if d.base is not None or d.dispatched or d.resolved:
                continue
            d.resolved = True
            if d.base_name == EMPTY_IMAGE:
                d.state = None
                d.image = _empty_image(self.target_platform)
                d.platform = self.target_platform
                if d.unregistered:
                    d.dispatched = True
                continue
            try:
                self._resolve_image(d)
            except PybuildError as exc:
                raise exc.with_location(d.loc.location()) from None
            if d.unregistered:
                d.dispatched = True

    def _resolve_image(self, d: _Stage) -> None:
        orig = d.base_name
        platform = d.platform or self.target_platform
        nc = self.named.get(orig) if orig.lower() != "context" else None
        familiar = orig
        if nc is None:
            full, familiar = self._normalize(orig, d.loc)
            nc = self.named.get(familiar) if familiar.lower() != "context" else None
        if nc is not None:
            state, image = self._named_context(familiar, nc, platform, d.loc)
            d.image = image if image is not None else _empty_image(self.target_platform)
            d.state = state
            d.platform = platform
            return
        try:
            resolved = self.resolver.resolve(full, platform)
        except UserError as exc:
            names = [s.stage_name for s in self.states if s.stage_name]
            options = [*names]
            for n in _COMMON_IMAGES:
                options += [n, f"docker.io/library{n}", f"{n}:latest",
                            f"docker.io/library{n}:latest"]
            raise self._fail(d.loc, ins.with_suggestion(f"{orig}: {exc.message}", orig,
                                                        options), hint=exc.hint) from None
        d.image = self._image_from_config(resolved.config, keep_created=False)
        d.platform = platform
        cfg = resolved.config
        is_scratch = not cfg.diff_ids and all(h.empty_layer for h in cfg.history)
        if is_scratch:
            d.state = None
        else:
            ref = f"{resolved.name}@{resolved.digest}"
            d.base_name = ref
            d.state = self.dag.add(
                SourceOp(identifier=f"docker-image://{ref}",
                         attrs=(("platform", _format_platform(platform)),)),
                self._meta(d, d.loc, f"FROM {ref}", platform=platform),
            )

    @staticmethod
    def _image_from_config(cfg: ImageConfig, *, keep_created: bool) -> _Image:
        return _Image(os=cfg.os or "linux", architecture=cfg.architecture,
                      variant=cfg.variant, os_version=cfg.os_version, author=cfg.author,
                      created=cfg.created if keep_created else "", config=cfg.config,
                      history=list(cfg.history))

    def _named_context(self, name: str, nc: NamedContext, platform: Platform,
                       loc: ins.Loc) -> tuple[Input | None, _Image | None]:
        if nc.kind == "local":
            state = self.dag.add(
                SourceOp(identifier=f"local://{name}", attrs=(("path", nc.value),)),
                OpMetadata(description=f"[internal] load build context {name}"))
            return state, None
        if nc.kind == "image":
            full, _ = self._normalize(nc.value, loc)
        elif nc.kind == "oci-layout":
            full = f"oci-layout://{nc.value}"
        else:
            raise self._fail(loc, f"unsupported named context kind {nc.kind!r}")
        try:
            resolved = self.resolver.resolve(full, platform)
        except UserError as exc:
            raise self._fail(loc, f"named context {name}: {exc.message}", hint=exc.hint) from None
        image = self._image_from_config(resolved.config, keep_created=True)
        cfg = resolved.config
        if not cfg.diff_ids and all(h.empty_layer for h in cfg.history):
            return None, image
        if nc.kind == "oci-layout":
            path = nc.value.rpartition("@")[0] if "@" in nc.value else nc.value.rpartition(":")[0]
            ident = f"oci-layout://{path or nc.value}@{resolved.digest}"
        else:
            ident = f"docker-image://{resolved.name}@{resolved.digest}"
        state = self.dag.add(
            SourceOp(identifier=ident, attrs=(("platform", _format_platform(platform)),)),
            OpMetadata(description=f"[context {name}] load {ident.split('://', 1)[1]}"))
        return state, image

    def _apply_named_stage(self, d: _Stage, nc: NamedContext) -> None:
        """A named context replaces a whole stage: its instructions never run."""
        d.named = True
        d.dispatched = True
        d.unregistered = False
        platform = d.platform or self.target_platform
        state, image = self._named_context(d.name, nc, platform, d.loc)
        d.state = state
        if image is not None:
            d.image = image
            if image.os and image.architecture:
                d.platform = Platform(os=image.os, architecture=image.architecture,
                                      variant=image.variant, os_version=image.os_version)
        d.env = _Env()
        for item in d.image.config.env:
            k, _, v = item.partition("=")
            d.env.set(k, v)
        d.dir = d.image.config.working_dir or "/"
        d.user = d.image.config.user

    # -- onbuild ------------------------------------------------------------------------

    def _init_onbuild(self, reachable: list[_Stage]) -> bool:
        from pybuild.frontend.dockerfile.parser import parse

        new_deps = False
        for d in reachable:
            if d.dispatched or d.unregistered or d.onbuild_init:
                continue
            d.onbuild_init = True
            if d.base is None:
                triggers = list(d.image.config.on_build)
            elif d.base.named:
                triggers = list(d.base.image.config.on_build)
            else:
                triggers = [c.inst.expression for c in d.base.commands
                            if isinstance(c.inst, ins.OnbuildInstruction)]
            d.image.set(on_build=())
            if not triggers:
                continue
            cmds = []
            for trigger in triggers:
                try:
                    parsed = parse(trigger.encode("utf-8", "surrogateescape"),
                                   self.opts.filename)
                except UserError as exc:
                    raise self._fail(d.loc, f"invalid ONBUILD trigger {trigger!r}: "
                                     f"{exc.message}") from None
                if len(parsed.ast.children) != 1:
                    raise self._fail(d.loc, "onbuild trigger should be a single expression")
                node = parsed.ast.children[0]
                node.start_line, node.end_line = d.loc.start_line, d.loc.end_line
                inst = ins.parse_instruction(node, self.opts.filename)
                if isinstance(inst, ins.FromInstruction):
                    raise self._fail(d.loc, "FROM isn't allowed as an ONBUILD trigger")
                cmd = self._to_command(d, inst, on_build=True)
                if any(s is not None for s in cmd.sources):
                    new_deps = True
                cmds.append(cmd)
            d.commands = cmds + d.commands
            d.cmd_total += len(cmds)
        if new_deps:
            self._check_cycles()
        return new_deps

    # -- dispatch -----------------------------------------------------------------------

    def _init_from_base(self, d: _Stage) -> None:
        base = d.base
        assert base is not None
        d.state = base.state
        d.platform = base.platform
        d.image = base.image.clone()
        d.image.set(on_build=())  # only direct children run a stage's triggers
        d.workdir_set = base.workdir_set
        d.build_args = list(base.build_args)
        d.env = base.env.copy()
        d.dir = base.dir
        d.user = base.user

    def _dispatch_stage(self, d: _Stage) -> None:
        if d.base is not None:
            self._init_from_base(d)
        d.dispatched = True
        if d.platform is None:
            d.platform = self.target_platform
        img = d.image
        env_items = img.config.env_dict()
        if "PATH" not in env_items and d.platform.os != "windows":
            img.set(env=(*img.config.env, f"PATH={DEFAULT_PATH}"))
        for item in img.config.env:
            k, _, v = item.partition("=")
            d.env.set(k, v)
        if img.config.working_dir:
            self._workdir(d, None, img.config.working_dir, commit=False)
        if img.config.user:
            d.user = img.config.user
        for cmd in d.commands:
            try:
                self._dispatch(d, cmd)
            except PybuildError as exc:
                if exc.location is None:
                    exc.location = cmd.inst.loc.location()
                raise
            except RecursionError:
                raise self._fail(cmd.inst.loc, "instruction is nested too deeply to "
                                 "process") from None

    def _dispatch(self, d: _Stage, cmd: _Cmd) -> None:
        d.cmd_is_onbuild = cmd.on_build
        inst = cmd.inst
        match inst:
            case ins.EnvInstruction():
                self._env(d, inst)
            case ins.LabelInstruction():
                self._label(d, inst)
            case ins.ArgInstruction():
                self._arg(d, inst)
            case ins.RunInstruction():
                self._run(d, inst, cmd.sources)
            case ins.CopyInstruction():
                self._copy(d, inst, cmd.sources)
            case ins.WorkdirInstruction():
                path = self._expand(inst.loc, inst.path, d.env)
                self._workdir(d, inst, path, commit=True)
            case ins.UserInstruction():
                user = self._expand(inst.loc, inst.user, d.env)
                d.user = user
                d.image.set(user=user)
                self._history(d, f"USER {user}")
            case ins.CmdInstruction():
                self._track(d, "cmd", inst)
                args = inst.cmd_line
                if inst.prepend_shell:
                    self._json_args_lint(d, inst)
                    args = self._with_shell(d, args)
                d.image.set(cmd=tuple(args), args_escaped=True)
                d.cmd_set = True
                self._history(d, f"CMD {_go_q_list(args)}")
            case ins.EntrypointInstruction():
                self._track(d, "entrypoint", inst)
                ep: list[str] | None = inst.cmd_line
                if inst.prepend_shell:
                    self._json_args_lint(d, inst)
                    ep = self._with_shell(d, ep or [])
                d.image.set(entrypoint=tuple(ep) if ep is not None else None)
                if not d.cmd_set:
                    d.image.set(cmd=None)
                self._history(d, f"ENTRYPOINT {_go_q_list(ep or [])}")
            case ins.HealthcheckInstruction():
                self._track(d, "healthcheck", inst)
                hc = Healthcheck(test=tuple(inst.test), interval=inst.interval,
                                 timeout=inst.timeout, start_period=inst.start_period,
                                 start_interval=inst.start_interval, retries=inst.retries)
                d.image.set(healthcheck=hc)
                self._history(d, f"HEALTHCHECK {_healthcheck_string(hc)}")
            case ins.ExposeInstruction():
                self._expose(d, inst)
            case ins.VolumeInstruction():
                vols = [self._expand(inst.loc, v, d.env) for v in inst.volumes]
                if any(v == "" for v in vols):
                    raise self._fail(inst.loc, "VOLUME specified can not be an empty string")
                d.image.set(volumes=tuple(sorted(set(d.image.config.volumes) | set(vols))))
                self._history(d, f"VOLUME [{' '.join(vols)}]")
            case ins.StopSignalInstruction():
                sig = self._expand(inst.loc, inst.signal, d.env)
                _validate_signal(inst.loc, sig)
                d.image.set(stop_signal=sig)
                self._history(d, f"STOPSIGNAL {sig}")
            case ins.ShellInstruction():
                d.image.set(shell=tuple(inst.shell))
                self._history(d, f"SHELL [{' '.join(inst.shell)}]")
            case ins.MaintainerInstruction():
                self.lint.run("MaintainerDeprecated", "Maintainer instruction is deprecated in "
                              "favor of using label", inst.loc.start_line)
                d.image.author = inst.maintainer
                self._history(d, f"MAINTAINER {inst.maintainer}")
            case ins.OnbuildInstruction():
                d.image.set(on_build=(*d.image.config.on_build, inst.expression))
            case _:
                raise self._fail(inst.loc, f"{inst.keyword} is not supported here")

    def _track(self, d: _Stage, what: str, inst: ins.Instruction) -> None:
        prev = d.trackers.get(what)
        if prev is not None:
            self.lint.run("MultipleInstructionsDisallowed", f"Multiple {inst.keyword} "
                          "instructions should not be used in the same stage because only the "
                          "last one will be used", prev.start_line)
        d.trackers[what] = inst.loc

    def _json_args_lint(self, d: _Stage, inst: ins.Instruction) -> None:
        if not d.image.config.shell:
            self.lint.run("JSONArgsRecommended", f"JSON arguments recommended for "
                          f"{inst.keyword} to prevent unintended behavior related to OS "
                          "signals", inst.loc.start_line)

    # -- metadata and history -----------------------------------------------------------

    def _prefix(self, d: _Stage, text: str, platform: Platform | None = None) -> str:
        if d.cmd_total == 0:
            return text
        out = "["
        if self.multi_platform and (platform or d.platform) is not None:
            out += _format_platform(platform or d.platform) + " "  # type: ignore[arg-type]
        if d.stage_name:
            out += d.stage_name + " "
        d.cmd_index += 1
        width = len(str(d.cmd_total))
        out += f"{d.cmd_index:>{width}}/{d.cmd_total}] "
        if d.cmd_is_onbuild:
            out += "ONBUILD "
        return out + text

    def _meta(self, d: _Stage, loc: ins.Loc, text: str,
              platform: Platform | None = None) -> OpMetadata:
        return OpMetadata(description=self._prefix(d, text, platform),
                          stage=d.stage_name or d.name, filename=loc.filename,
                          start_line=loc.start_line, end_line=loc.end_line,
                          ignore_cache=d.ignore_cache)

    def _display(self, loc: ins.Loc, env: _Env, **lex_flags: bool) -> str:
        """processCmdEnv + uppercaseCmd: the instruction text with variables expanded."""
        text = loc.text
        try:
            text = str(self._lex(**lex_flags).process_word(text, env.items))
        except (PybuildError, RecursionError):
            pass
        head, sep, rest = text.partition(" ")
        return head.upper() + sep + rest

    def _history(self, d: _Stage, created_by: str, *, layer: bool = False,
                 buildkit: bool = False) -> None:
        if buildkit:
            created_by += " # buildkit"
        d.image.history.append(History(created=self.epoch, created_by=created_by,
                                       comment=HISTORY_COMMENT, empty_layer=not layer))

    # -- ENV / LABEL / ARG / EXPOSE / WORKDIR -------------------------------------------

    def _env(self, d: _Stage, inst: ins.EnvInstruction) -> None:
        before = d.env.copy()  # all words of one instruction see the same environment
        pairs = [(self._expand(inst.loc, kv.key, before), self._expand(inst.loc, kv.value,
                                                                        before), kv.no_delim)
                 for kv in inst.pairs]
        parts = []
        config_env = list(d.image.config.env)
        for key, value, no_delim in pairs:
            if no_delim:
                self.lint.run("LegacyKeyValueFormat", '"ENV key=value" should be used instead '
                              'of legacy "ENV key value" format', inst.loc.start_line)
            self._secret_lint("ENV", key, inst.loc)
            if not key:
                raise self._fail(inst.loc, "ENV names can not be blank")
            d.env.set(key, value)
            config_env = _add_env(config_env, key, value)
            parts.append(f"{key}={value}")
        d.image.set(env=tuple(config_env))
        self._history(d, "ENV " + " ".join(parts))

    def _secret_lint(self, what: str, key: str, loc: ins.Loc) -> None:
        deny = re.compile(r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|"
                          r"passwd|secret|token)(?:_|$)")
        allow = re.compile(r"(?i)(?:_|^)(?:public)(?:_|$)")
        if deny.search(key) and not allow.search(key):
            self.lint.run("SecretsUsedInArgOrEnv", f'Do not use ARG or ENV instructions for '
                          f'sensitive data ({what} "{key}")', loc.start_line)

    def _label(self, d: _Stage, inst: ins.LabelInstruction) -> None:
        before = d.env.copy()
        labels = dict(d.image.config.labels)
        parts = []
        for kv in inst.pairs:
            key = self._expand(inst.loc, kv.key, before)
            value = self._expand(inst.loc, kv.value, before)
            if kv.no_delim:
                self.lint.run("LegacyKeyValueFormat", '"LABEL key=value" should be used instead '
                              'of legacy "LABEL key value" format', inst.loc.start_line)
            if not key:
                raise self._fail(inst.loc, "LABEL names can not be blank")
            labels[key] = value
            parts.append(f"{key}={value}")
        d.image.set(labels=tuple(sorted(labels.items())))
        self._history(d, "LABEL " + " ".join(parts))

    def _arg(self, d: _Stage, inst: ins.ArgInstruction) -> None:
        parts = []
        for decl in inst.args:
            self._secret_lint("ARG", decl.key, inst.loc)
            has_value = decl.key in self.build_args
            value = decl.value
            if value is None and not has_value:
                value = self.global_args.get(decl.key)
            elif has_value:
                value = self.build_args[decl.key]
            elif value is not None:
                value = self._expand(inst.loc, value, d.env)
            if value is not None and decl.key not in NON_ENV_ARGS:
                d.env.set(decl.key, value)
            d.build_args.append((decl.key, value))
            parts.append(decl.key if value is None else f"{decl.key}={value}")
        self._history(d, "ARG " + " ".join(parts))

    def _expose(self, d: _Stage, inst: ins.ExposeInstruction) -> None:
        words: list[str] = []
        for p in inst.ports:
            try:
                words.extend(self.lex.process_words(p, d.env.items))
            except PybuildError as exc:
                raise self._fail(inst.loc, exc.message) from None
        ports: list[str] = []
        for w in words:
            proto = w.partition("/")[2]
            if proto and proto != proto.lower():
                self.lint.run("ExposeProtoCasing", f"Defined protocol '{w}' in EXPOSE "
                              "instruction should be lowercase", inst.loc.start_line)
            try:
                ports.extend(_parse_port_spec(w))
            except ValueError as exc:
                raise self._fail(inst.loc, str(exc),
                                 hint="use PORT, PORT/PROTO or START-END/PROTO, e.g. "
                                      "8080/tcp") from None
        d.image.set(exposed_ports=tuple(sorted(set(d.image.config.exposed_ports)
                                               | set(ports))))
        self._history(d, f"EXPOSE [{' '.join(ports)}]")

    def _workdir(self, d: _Stage, inst: ins.WorkdirInstruction | None, path: str, *,
                 commit: bool) -> None:
        if commit and inst is not None:
            if not d.workdir_set and not path.startswith("/"):
                self.lint.run("WorkdirRelativePath", f"Relative workdir {path!r} can have "
                              "unexpected results if the base image changes",
                              inst.loc.start_line)
            d.workdir_set = True
        if not path:
            loc = inst.loc if inst is not None else d.loc
            raise self._fail(loc, "normalizing workdir: cannot normalize nothing")
        current = d.image.config.working_dir
        wd = path if path.startswith("/") else posixpath.join("/", current, path)
        wd = _clean(wd)
        d.image.set(working_dir=wd)
        d.dir = wd
        if not commit or inst is None:
            return
        layer = wd != "/"
        if layer:
            chown = _chown(d.image.config.user) if d.image.config.user else None
            d.state = self.dag.add(
                FileOp(base=d.state, actions=(MkdirAction(path=wd, mode=0o755, chown=chown,
                                                          make_parents=True),)),
                self._meta(d, inst.loc, self._display(inst.loc, d.env)),
            )
        self._history(d, f"WORKDIR {wd}", layer=layer)

    # -- RUN ----------------------------------------------------------------------------

    def _with_shell(self, d: _Stage, args: list[str]) -> list[str]:
        shell = list(d.image.config.shell) or list(
            WINDOWS_SHELL if d.image.os == "windows" else DEFAULT_SHELL)
        return [*shell, " ".join(args)]

    def _run(self, d: _Stage, inst: ins.RunInstruction, sources: list[_Stage | None]) -> None:
        from pybuild.frontend.dockerfile.parser import chomp_heredoc_content, must_parse_heredoc

        before = d.env.copy()
        mounts: list[RunMount] = []
        for spec in inst.mounts:
            try:
                mounts.append(parse_mount(spec, lambda w: self._expand(inst.loc, w, before)))
            except PybuildError as exc:
                raise self._fail(inst.loc, exc.message, hint=exc.hint) from None
        if inst.devices:
            raise self._fail(inst.loc, "RUN --device is not supported yet",
                             hint="remove --device; pybuild has no CDI device support")
        args = list(inst.cmd_line)
        extra: list[Mount] = []
        display_suffix = ""
        prepend = inst.prepend_shell
        if inst.files:
            if len(args) != 1 or not prepend:
                raise self._fail(inst.loc, f"parsing produced an invalid run command: "
                                 f"[{' '.join(args)}]")
            first = inst.files[0]
            if must_parse_heredoc(args[0]) is not None:
                data = chomp_heredoc_content(first.data) if first.chomp else first.data
                if d.image.os != "windows" and first.data.startswith("#!"):
                    src = self.dag.add(FileOp(base=None, actions=(
                        MkfileAction(path="/" + first.name, data=_b(data), mode=0o755),)),
                        OpMetadata(description="[internal] preparing inline document"))
                    extra.append(Mount(target="/dev/pipes", type="bind", input=src,
                                       selector="/", readonly=True))
                    args = [posixpath.join("/dev/pipes/", first.name)]
                else:
                    args = [data]
                display_suffix = f" ({_summarize_heredoc(first.data)})"
            else:
                full = args[0]
                for f in inst.files:
                    full += "\n" + f.data + f.name
                args = [full]
        if prepend:
            args = self._with_shell(d, args)

        exec_mounts: list[Mount] = []
        ssh_index = 0
        for i, m in enumerate(mounts):
            exec_mounts.append(self._run_mount(d, inst, m, sources[i] if i < len(sources)
                                               else None, ssh_index))
            if m.type == "ssh":
                ssh_index += 1
        env = d.env.copy()
        ssh_targets = [m.target for m in exec_mounts if m.type == "ssh"]
        if ssh_targets and env.get("SSH_AUTH_SOCK") is None:
            env.set("SSH_AUTH_SOCK", ssh_targets[0])
        network = self.opts.network if inst.network == "default" else inst.network
        op = ExecOp(
            rootfs=d.state,
            args=tuple(args),
            env=tuple(env.as_list()),
            cwd=d.dir,
            user=d.user,
            hostname=self.hostname,
            network=network or "default",
            security=inst.security,
            mounts=tuple([*extra, *exec_mounts]),
            proxy_env=self._proxy_env(),
        )
        masked = d.env.copy()
        for m in mounts:
            if m.type == "secret" and m.env:
                masked.set(m.env, "****")
        name = self._display(inst.loc, masked, raw_quotes=True, skip_unset_env=True)
        d.state = self.dag.add(op, self._meta(d, inst.loc, name + display_suffix))
        self._history(d, "RUN " + _run_command_string(args, d.build_args, d.env), layer=True,
                      buildkit=True)

    def _proxy_env(self) -> tuple[str, ...]:
        out: dict[str, str] = {}
        for key, value in sorted(self.build_args.items()):
            low = key.lower()
            if low in PROXY_ARGS:
                out[low.upper()] = value
                out[low] = value
        return tuple(f"{k}={v}" for k, v in out.items())

    def _run_mount(self, d: _Stage, inst: ins.RunInstruction, m: RunMount,
                   src: _Stage | None, ssh_index: int) -> Mount:
        loc = inst.loc
        if m.type == "secret":
            sid = m.source or m.id
            if not sid:
                if not m.target:
                    raise self._fail(loc, "one of source, target required")
                sid = posixpath.basename(m.target)
            target: str | None = m.target or None
            if m.env is None:
                target = m.target or "/run/secrets/" + posixpath.basename(sid)
            return Mount(target=target or "", type="secret", readonly=True, secret=SecretOpts(
                id=sid, required=m.required, mode=0o400 if m.mode is None else m.mode,
                uid=m.uid or 0, gid=m.gid or 0, env=m.env or "", file=target is not None))
        if m.type == "ssh":
            if m.source:
                raise self._fail(loc, "ssh does not support source")
            sid = m.id or "default"
            target = m.target or f"/run/buildkit/ssh_agent.{ssh_index}"
            return Mount(target=target, type="ssh", readonly=True, ssh_id=sid, ssh=SSHOpts(
                id=sid, required=m.required, mode=0o600 if m.mode is None else m.mode,
                uid=m.uid or 0, gid=m.gid or 0))
        source_input: Input | None
        if m.type == "tmpfs":
            source_input = None
        elif m.from_:
            if src is None:
                raise self._fail(loc, f"unknown mount source {m.from_!r}")
            if not src.dispatched:
                raise self._fail(loc, f'cannot mount from stage "{m.from_}" to "{m.target}", '
                                 "stage needs to be defined before current command",
                                 hint="move the stage above this one")
            source_input = src.state
        elif m.type == "cache":
            source_input = None  # a cache mount without from= is seeded from scratch
        else:
            source_input = self._context()
        target = m.target
        if not posixpath.isabs(_clean(m.target or ".")):
            target = posixpath.join("/", d.dir, m.target)
        target = _clean(target) if target else target
        if target == "/":
            raise self._fail(loc, 'invalid mount target "/"',
                             hint="give the mount a target, e.g. target=/mnt")
        selector = _clean(posixpath.join("/", m.source))
        if m.type == "tmpfs":
            return Mount(target=target, type="tmpfs", readonly=m.readonly,
                         tmpfs_size=m.size)
        if m.type == "cache":
            cid = m.id or _clean(m.target)
            if self.cache_ns:
                cid = f"{self.cache_ns}/{cid}"
            return Mount(target=target, type="cache", input=source_input, selector=selector,
                         readonly=m.readonly, cache=CacheMountOpts(
                             id=cid, sharing=m.sharing or "shared",
                             mode=0o755 if m.mode is None else m.mode,
                             uid=m.uid or 0, gid=m.gid or 0))
        if source_input is None:
            source_input = self._scratch_input()
        return Mount(target=target, type="bind", input=source_input, selector=selector,
                     readonly=m.readonly)

    # -- COPY / ADD ---------------------------------------------------------------------

    def _copy(self, d: _Stage, inst: ins.CopyInstruction, sources: list[_Stage | None]) -> None:
        loc = inst.loc
        env = d.env.copy()
        srcs = [self._expand(loc, s, env) for s in inst.sources]
        dest_raw = self._expand(loc, inst.dest, env)
        chown_text = self._expand(loc, inst.chown, env) if inst.chown else ""
        chmod = self._expand(loc, inst.chmod, env) if inst.chmod else ""
        checksum = self._expand(loc, inst.checksum, env) if inst.checksum else ""
        contents = []
        for c in inst.contents:
            data = c.data
            if c.expand:
                from pybuild.frontend.shell.lex import ShellLex

                try:
                    data = str(ShellLex("\\", skip_process_quotes=True).process_word(
                        data, env.items))
                except PybuildError as exc:
                    raise self._fail(loc, exc.message) from None
            contents.append((c.path, data))

        source: Input | None
        from_context = True
        if sources and sources[0] is not None:
            st = sources[0]
            if not st.dispatched:
                raise self._fail(loc, f'cannot copy from stage "{inst.from_}", it needs to be '
                                 f'defined before current stage "{d.stage_name}"',
                                 hint="move the stage you copy from above this one")
            source = st.state
            from_context = False
        else:
            source = self._context()

        dest, dest_is_dir = _dest_path(d.dir, dest_raw)
        if chmod:
            _validate_chmod(loc, chmod)
        if checksum:
            if not inst.is_add:
                raise self._fail(loc, "checksum can't be specified for COPY")
            if len(srcs) != 1:
                raise self._fail(loc, "checksum can't be specified for multiple sources")
            if not _is_http(srcs[0]) and not _is_git(srcs[0]):
                raise self._fail(loc, "checksum requires HTTP(S) or Git sources")
        chown = _chown(chown_text) if chown_text else None
        history = "ADD" if inst.is_add else "COPY"
        if inst.parents:
            history += " --parents"
        if chown_text:
            history += f" --chown={chown_text}"
        if chmod:
            history += f" --chmod={chmod}"
        link = inst.link and not chmod
        actions: list[CopyAction] = []
        for src in srcs:
            history += " " + src
            git = _parse_git_ref(src)
            if git is not None:
                if not inst.is_add:
                    raise self._fail(loc, "source can't be a git ref for COPY",
                                     hint="use ADD for git sources")
                keep = git.get("keep-git-dir")
                if inst.keep_git_dir is not None and keep is not None and \
                        inst.keep_git_dir != keep:
                    raise self._fail(loc, "inconsistent keep-git-dir configuration")
                ref_sum = git.get("checksum")
                if checksum and ref_sum and checksum != ref_sum:
                    raise self._fail(loc, f'checksum mismatch "{checksum}" != "{ref_sum}"')
                keep_git = bool(keep if keep is not None else inst.keep_git_dir)
                actions.append(CopyAction(
                    source=self._git_source(d, loc, src, git, keep_git,
                                            str(checksum or ref_sum or "")),
                    sources=("/",), dest=dest, chown=chown, chmod=chmod,
                    allow_wildcard=False, allow_empty_wildcard=False,
                    exclude=tuple(inst.exclude), dest_is_dir=True, link=link))
                continue
            if _is_http(src):
                if not inst.is_add:
                    raise self._fail(loc, "source can't be a URL for COPY",
                                     hint="use ADD for URLs")
                if checksum:
                    _validate_digest(loc, checksum)
                filename = _url_filename(src)
                actions.append(CopyAction(
                    source=self._http_source(d, loc, src, filename, checksum),
                    sources=("/" + filename,), dest=dest, chown=chown, chmod=chmod,
                    allow_wildcard=False, allow_empty_wildcard=False,
                    exclude=tuple(inst.exclude), dest_is_dir=dest_is_dir,
                    unpack=inst.unpack is True, link=link))
                continue
            include: tuple[str, ...] = ()
            required: tuple[str, ...] = ()
            path = src
            if inst.parents:
                parent, sep, pattern = src.partition("/./")
                if not sep:
                    pattern, parent = src, "/"
                pattern = _clean(posixpath.join("/", pattern))
                include = (pattern.removeprefix("/"),)
                if not _has_wildcards(parent) and not _has_wildcards(pattern):
                    required = (_clean(posixpath.join("/", parent, pattern.lstrip("/"))),)
                path = parent
            path = _clean(posixpath.join("/", path))
            unpack = inst.is_add if inst.unpack is None else inst.unpack
            if source is None:
                source = self._scratch_input()
            actions.append(CopyAction(
                source=source, sources=(path,), dest=dest, chown=chown, chmod=chmod,
                parents=inst.parents, exclude=tuple(inst.exclude), from_context=from_context,
                dest_is_dir=dest_is_dir, unpack=unpack, include_patterns=include,
                required_paths=required, link=link))
        for name, data in contents:
            history += " <<" + name
            doc = self.dag.add(FileOp(base=None, actions=(
                MkfileAction(path=_clean("/" + name), data=_b(data), mode=0o644),)),
                OpMetadata(description="[internal] preparing inline document"))
            actions.append(CopyAction(
                source=doc, sources=(_clean("/" + name),), dest=dest, chown=chown, chmod=chmod,
                allow_wildcard=False, allow_empty_wildcard=False, follow_symlinks=False,
                exclude=tuple(inst.exclude), from_context=False, dest_is_dir=dest_is_dir,
                link=link))
        history += " " + dest_raw
        d.state = self.dag.add(FileOp(base=d.state, actions=tuple(actions)),
                               self._meta(d, loc, self._display(loc, env)))
        self._history(d, history, layer=True, buildkit=True)

    def _http_source(self, d: _Stage, loc: ins.Loc, url: str, filename: str,
                     checksum: str) -> Input:
        """llb.HTTP: the file lands as `/<filename>`, 0600 (a --chmod is applied by the
        copy), with the Last-Modified time."""
        attrs = [("http.filename", filename), ("http.perm", "0600")]
        if checksum:
            attrs.append(("http.checksum", checksum))
        meta = self._meta(d, loc, f"[internal] load remote file {_redact(url)}")
        meta = replace(meta, description=f"[internal] load remote file {_redact(url)}")
        return self.dag.add(SourceOp(identifier=url, attrs=tuple(sorted(attrs))), meta)

    def _git_source(self, d: _Stage, loc: ins.Loc, src: str, opts: dict[str, Any],
                    keep_git_dir: bool, checksum: str) -> Input:
        """llb.Git: the checkout of `ref` (a commit, tag or branch), rooted at `subdir`."""
        remote, ref, subdir = _split_git_ref(src)
        qref = opts.get("ref") or opts.get("tag") or opts.get("branch")
        if qref:
            if ref:
                raise self._fail(loc, "ref specified both in the URL fragment and the query")
            ref = qref
        if opts.get("subdir"):
            if subdir:
                raise self._fail(loc, "subdir specified both in the URL fragment and the "
                                 "query")
            subdir = opts["subdir"]
        if subdir:
            subdir = _clean("/" + subdir).lstrip("/")
        attrs = [("git.fullurl", remote), ("git.ref", ref), ("git.subdir", subdir),
                 ("git.keepgitdir", "true" if keep_git_dir else "false"),
                 ("git.submodules", "false" if opts.get("submodules") is False else "true")]
        if checksum:
            attrs.append(("git.checksum", checksum))
        ident = "git://" + re.sub(r"^[a-z+]+://", "", remote)
        desc = f"[internal] load git source {_redact(remote)}" + (f"#{ref}" if ref else "") + (
            f":{subdir}" if subdir else "")
        meta = replace(self._meta(d, loc, desc), description=desc)
        return self.dag.add(SourceOp(identifier=ident, attrs=tuple(sorted(attrs))), meta)

    # -- result -------------------------------------------------------------------------

    def _result(self, target: _Stage) -> FrontendResult:
        img = target.image
        labels = dict(img.config.labels)
        labels.update(self.opts.labels)
        os_, arch, variant, os_version = img.os, img.architecture, img.variant, img.os_version
        if not self.implicit_target:
            t = self.target_platform
            os_, arch, variant, os_version = t.os, t.architecture, t.variant, t.os_version
        config = ImageConfig(
            architecture=arch or self.target_platform.architecture,
            os=os_ or "linux",
            variant=variant,
            os_version=os_version,
            author=img.author,
            created=img.created,
            config=replace(img.config, labels=tuple(sorted(labels.items()))),
            history=tuple(img.history),
        )
        return FrontendResult(
            definition=self.dag.build(target.state),
            config=config,
            stage_name=target.stage_name or target.name,
            warnings=tuple(self.warnings + self.lint.warnings()),
        )


# --- helpers ---------------------------------------------------------------------------


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _clean(path: str) -> str:
    """Go's path.Clean."""
    if path == "":
        return "."
    out = posixpath.normpath(path)
    if out.startswith("//"):
        out = "/" + out.lstrip("/")
    return out


def _dest_path(workdir: str, dest: str) -> tuple[str, bool]:
    """pathRelativeToWorkingDir: (clean absolute dest, whether a trailing slash was kept)."""
    keep_slash = dest.endswith("/") or dest.endswith("/.") or dest in ("", ".")
    if not dest.startswith("/"):
        dest = posixpath.join(workdir or "/", dest or ".")
    return _clean(dest), keep_slash


def _add_env(env: list[str], key: str, value: str) -> list[str]:
    out = list(env)
    for i, item in enumerate(out):
        if item.partition("=")[0] == key:
            out[i] = f"{key}={value}"
            return out
    out.append(f"{key}={value}")
    return out


def _chown(text: str) -> Chown:
    # `user:` (an empty group) is group 0, as BuildKit's llb.WithUser marshals it.
    user, sep, group = text.partition(":")
    return Chown(user=user, group=group or ("0" if sep else ""))


def _run_command_string(args: list[str], build_args: list[tuple[str, str | None]],
                        env: _Env) -> str:
    items: dict[str, str] = {}
    for key, value in build_args:
        v = env.get(key)
        items[key] = f"{key}={v if v is not None else (value or '')}"
    prefix = [f"|{len(items)}", *items.values()] if items else []
    return " ".join([*prefix, *args])


def _format_platform(p: Platform) -> str:
    s = f"{p.os}/{p.architecture}"
    return f"{s}/{p.variant}" if p.variant else s


def _format_platform_all(p: Platform) -> str:
    """containerd's platforms.FormatAll: the OS version (and features) in parentheses."""
    os_part = p.os
    if p.os_version or p.os_features:
        inner = p.os_version
        if p.os_features:
            inner += "+" + "+".join(p.os_features)
        os_part += f"({inner})"
    s = f"{os_part}/{p.architecture}"
    return f"{s}/{p.variant}" if p.variant else s


def _go_q_list(args: list[str]) -> str:
    from pybuild.frontend.dockerfile.goquote import go_quote

    return "[" + " ".join(go_quote(a) for a in args) + "]"


def _go_duration(ns: int) -> str:
    """Go's time.Duration.String()."""
    if ns == 0:
        return "0s"
    neg = ns < 0
    u = -ns if neg else ns
    if u < 1_000_000_000:
        for unit, size in (("ns", 1), ("µs", 1_000), ("ms", 1_000_000)):
            if u < size * 1000:
                out = _frac(u, size) + unit
                break
    else:
        h, rem = divmod(u, 3_600_000_000_000)
        m, rem = divmod(rem, 60_000_000_000)
        out = _frac(rem, 1_000_000_000) + "s"
        if h or m:
            out = f"{m}m" + out
        if h:
            out = f"{h}h" + out
    return ("-" if neg else "") + out


def _frac(value: int, size: int) -> str:
    whole, frac = divmod(value, size)
    if not frac:
        return str(whole)
    digits = str(frac).rjust(len(str(size)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def _healthcheck_string(hc: Healthcheck) -> str:
    """Go's %+v of dockerspec.HealthcheckConfig."""
    return (f"{{Test:[{' '.join(hc.test)}] Interval:{_go_duration(hc.interval)} "
            f"Timeout:{_go_duration(hc.timeout)} StartPeriod:{_go_duration(hc.start_period)} "
            f"StartInterval:{_go_duration(hc.start_interval)} Retries:{hc.retries}}}")


def _summarize_heredoc(doc: str) -> str:
    doc = doc.strip()
    lines = doc.replace("\r\n", "\n").split("\n")
    return lines[0] + ("..." if len(lines) > 1 else "")


_SIGNALS = frozenset({
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
    "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
    "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
    "RTMIN", "RTMAX", *(f"RTMIN+{i}" for i in range(1, 16)),
    *(f"RTMAX-{i}" for i in range(1, 15)),
})


def _validate_signal(loc: ins.Loc, sig: str) -> None:
    """moby/sys/signal.ParseSignal."""
    if re.fullmatch(r"[+-]?\d+", sig):
        if int(sig) == 0 or not -(2**63) <= int(sig) < 2**63:
            raise loc.error(f"invalid signal: {sig}", cls=UserError)
        return
    if sig.upper().removeprefix("SIG") not in _SIGNALS:
        raise loc.error(f"invalid signal: {sig}", cls=UserError,
                        hint="use a signal name such as SIGTERM, or a number")


_OCTAL_ERR = "invalid chmod parameter: '{}'. it should be octal string and between 0 and 07777"


def _validate_chmod(loc: ins.Loc, chmod: str) -> None:
    """convert_copy.go: octal 0..07777, else a symbolic mode (tonistiigi/dchapes-mode)."""
    if re.fullmatch(r"[0-7]+", chmod):
        if int(chmod, 8) > 0o7777:
            raise loc.error(_OCTAL_ERR.format(chmod), cls=UserError)
        return
    if chmod[:1].isdigit():
        raise loc.error(_OCTAL_ERR.format(chmod), cls=UserError)
    if not _symbolic_mode_ok(chmod):
        raise loc.error(f"invalid mode {chmod!r}: not an octal mode or a symbolic mode such as "
                        "u+x,g=rX", cls=UserError)


def _symbolic_mode_ok(s: str) -> bool:
    """The BSD setmode(3) grammar: [ugoa]*([-+=]([rwxXst]*|[ugo]))+ joined by commas."""
    for clause in s.split(","):
        i = 0
        while i < len(clause) and clause[i] in "ugoa":
            i += 1
        if i == len(clause) or clause[i] not in "+-=":
            return False
        while i < len(clause):
            if clause[i] not in "+-=":
                return False
            i += 1
            if i < len(clause) and clause[i] in "ugo":
                i += 1
                continue
            while i < len(clause) and clause[i] in "rwxXst":
                i += 1
    return True


def _has_wildcards(name: str) -> bool:
    i = 0
    while i < len(name):
        if name[i] in "*?[":
            return True
        if name[i] == "\\":
            i += 1
        i += 1
    return False


def _parse_port_spec(raw: str) -> list[str]:
    """convert_expose.go parsePortSpec: [ip:][hostport:]port[-end][/proto]."""
    parts = raw.split(":")
    if len(parts) == 1:
        ip, host, container = "", "", parts[0]
    elif len(parts) == 2:
        ip, host, container = "", parts[0], parts[1]
    else:
        ip, host, container = ":".join(parts[:-2]), parts[-2], parts[-1]
    port, _, proto = container.partition("/")
    if not port:
        raise ValueError(f"no port specified: {container}<empty>")
    proto = proto.lower() or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise ValueError(f"invalid proto: {proto}")
    if ip:
        import ipaddress

        addr = ip[1:-1] if ip.startswith("[") and ip.endswith("]") else ip
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise ValueError(f"invalid IP address: {ip}") from None
    try:
        start, end = _port_range(port)
    except ValueError:
        raise ValueError(f"invalid containerPort: {port}") from None
    if host:
        try:
            hs, he = _port_range(host)
        except ValueError:
            raise ValueError(f"invalid hostPort: {host}") from None
        if end - start != he - hs and end != start:
            raise ValueError(f"invalid ranges specified for container and host Ports: {port} "
                             f"and {host}")
    return [f"{n}/{proto}" for n in range(start, end + 1)]


def _port_range(text: str) -> tuple[int, int]:
    def num(s: str) -> int:
        if not re.fullmatch(r"\d+", s) or int(s) > 65535:
            raise ValueError(s)
        return int(s)

    if not text:
        raise ValueError("empty string specified for ports")
    if "-" not in text:
        n = num(text)
        return n, n
    parts = text.split("-")
    if len(parts) != 2:
        raise ValueError(text)
    start, end = num(parts[0]), num(parts[1])
    if end < start:
        raise ValueError(text)
    return start, end


_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


def _validate_digest(loc: ins.Loc, text: str) -> None:
    """go-digest Parse + Validate."""
    algo, sep, hexpart = text.partition(":")
    if not sep or not algo or not hexpart or not re.fullmatch(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*",
                                                               algo):
        raise loc.error("invalid checksum digest format", cls=UserError,
                        hint="use --checksum=sha256:<64 hex digits>")
    if algo not in _DIGEST_LENGTHS:
        raise loc.error("unsupported digest algorithm", cls=UserError,
                        hint="use sha256, sha384 or sha512")
    if len(hexpart) != _DIGEST_LENGTHS[algo] or not re.fullmatch(r"[a-f0-9]+", hexpart):
        raise loc.error("invalid checksum digest length", cls=UserError)


def _redact(url: str) -> str:
    """A URL without its credentials (for descriptions)."""
    return re.sub(r"^([a-z+]+://)[^/@]*@", r"\1", url)


def _url_filename(url: str) -> str:
    """The file name of an `ADD <url>`: the basename of the URL path, `__unnamed__` if
    there is none (dockerfile2llb)."""
    from urllib.parse import urlsplit

    path = urlsplit(url).path
    base = posixpath.basename(path.rstrip("/")) if path not in ("", "/") else ""
    return base if base not in ("", ".", "..", "/") else "__unnamed__"


def _split_git_ref(src: str) -> tuple[str, str, str]:
    """(remote, ref, subdir) of a git source: `remote[?query]#ref:subdir`."""
    remote, _, fragment = src.partition("#")
    remote = remote.split("?", 1)[0]
    ref, _, subdir = fragment.partition(":")
    return remote, ref, subdir


def _is_http(src: str) -> bool:
    return src.startswith(("http://", "https://")) and not _is_git(src)


def _is_git(src: str) -> bool:
    return _parse_git_ref(src) is not None


_GIT_SCP = re.compile(r"^[A-Za-z0-9_.-]+@[A-Za-z0-9.-]+:(?!//).+")


def _parse_git_ref(src: str) -> dict[str, Any] | None:
    """dfgitutil.ParseGitRef, reduced to: is it a git source that is distinguishable from a
    local path, and its keep-git-dir / checksum query options. None: not a git ref."""
    from urllib.parse import parse_qs, urlsplit

    remote = src
    if src.startswith(("git://", "ssh://", "git@")) or _GIT_SCP.match(src):
        pass
    elif src.startswith(("http://", "https://")):
        path = urlsplit(src).path
        if not path.endswith(".git") and ".git/" not in path:
            return None
    else:
        return None
    opts: dict[str, Any] = {}
    if "?" in remote:
        query = remote.split("?", 1)[1].split("#", 1)[0]
        values = parse_qs(query, keep_blank_values=True)
        for key in ("keep-git-dir", "submodules"):
            if key in values:
                v = values[key][-1].lower()
                opts[key] = v in ("", "1", "true", "t")
        for key in ("checksum", "ref", "subdir", "tag", "branch"):
            if key in values:
                opts[key] = values[key][-1]
    return opts
