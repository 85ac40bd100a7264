"""Dockerfile -> op DAG + image config (BuildKit's dockerfile2llb, dispatch by dispatch)."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Protocol

from pybuild.digest import Digest
from pybuild.errors import DockerfileSyntaxError, PybuildError, SourceLocation, UserError
from pybuild.frontend import instructions as ins
from pybuild.frontend.runmount import RunMount, parse_run_mount
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
)
from pybuild.oci.config import DEFAULT_PATH, ContainerConfig, Healthcheck, History, ImageConfig
from pybuild.oci.platform import Platform
from pybuild.oci.platform import host as host_platform

DEFAULT_SHELL = ("/bin/sh", "-c")
PROXY_ARGS = frozenset({
    "HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY",
})
# Args that configure the build itself and never reach a RUN environment.
NON_ENV_ARGS = frozenset({"BUILDKIT_SYNTAX", "BUILDKIT_CACHE_MOUNT_NS",
                          "BUILDKIT_CONTEXT_KEEP_GIT_DIR", "BUILDKIT_MULTI_PLATFORM",
                          "BUILDKIT_SANDBOX_HOSTNAME", "BUILDKIT_DOCKERFILE_CHECK",
                          "SOURCE_DATE_EPOCH"})
CONTEXT_SOURCE = "local://context"


# --- what the frontend needs from the outside ------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedImage:
    name: str  # canonical reference string without digest, e.g. docker.io/library/busybox:latest
    digest: Digest  # the platform manifest digest
    config: ImageConfig


class ImageMetaResolver(Protocol):
    def resolve(self, ref: str, platform: Platform) -> ResolvedImage: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontendOptions:
    dockerfile: bytes
    filename: str = "Dockerfile"
    build_args: tuple[tuple[str, str], ...] = ()
    target: str = ""
    platform: Platform | None = None  # target platform; None = host
    labels: tuple[tuple[str, str], ...] = ()
    dockerignore: tuple[str, ...] = ()  # patterns applied to the main context
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    network: str = "default"


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontendResult:
    definition: Definition
    config: ImageConfig  # diff_ids are filled in by the exporter from the solved layers
    stage_name: str
    warnings: tuple[str, ...] = ()


# --- state -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Env:
    """An ordered environment where re-setting a key keeps its position (llb.EnvList)."""

    items: dict[str, str] = field(default_factory=dict)

    def set(self, key: str, value: str) -> None:
        self.items[key] = value

    def get(self, key: str) -> str | None:
        return self.items.get(key)

    def as_list(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.items.items()]

    def copy(self) -> _Env:
        return _Env(dict(self.items))


@dataclass(slots=True)
class _Stage:
    index: int
    name: str
    base_name: str
    from_: ins.FromInstruction
    commands: list[ins.Instruction]
    base: _Stage | None = None
    state: Input | None = None
    platform: Platform | None = None
    config: ContainerConfig = field(default_factory=ContainerConfig)
    image_os: str = "linux"
    image_arch: str = ""
    image_variant: str = ""
    author: str = ""
    env: _Env = field(default_factory=_Env)
    build_args: list[tuple[str, str | None]] = field(default_factory=list)
    history: list[History] = field(default_factory=list)
    base_created: str = ""
    deps: set[int] = field(default_factory=set)
    dispatched: bool = False
    cmd_set: bool = False
    ignore_cache: bool = False
    cmd_index: int = 0

    @property
    def display(self) -> str:
        return self.name or f"stage-{self.index}"


# --- entry point -----------------------------------------------------------------------


def compile_dockerfile(opts: FrontendOptions, resolver: ImageMetaResolver) -> FrontendResult:
    from pybuild.frontend.dockerfile.parser import parse

    parsed = parse(opts.dockerfile, opts.filename)
    return _Converter(opts, resolver, parsed.escape_token).run(parsed.ast.children)


class _Converter:
    def __init__(self, opts: FrontendOptions, resolver: ImageMetaResolver, escape: str) -> None:
        from pybuild.frontend.shell.lex import ShellLex

        self.opts = opts
        self.resolver = resolver
        self.lex = ShellLex(escape_token=escape)
        self.dag = DefinitionBuilder()
        self.build_args = dict(opts.build_args)
        self.target_platform = opts.platform or host_platform()
        self.build_platform = host_platform()
        self.warnings: list[str] = []
        self.stages: list[_Stage] = []
        self.context_input: Input | None = None

    # -- helpers ------------------------------------------------------------------------

    def _fail(self, inst: ins.Instruction, message: str, hint: str | None = None) -> UserError:
        return inst.loc.error(message, hint=hint, cls=UserError)

    def _expand(self, inst: ins.Instruction, word: str, env: _Env) -> str:
        try:
            return str(self.lex.process_word(word, env.items))
        except PybuildError as exc:
            raise self._fail(inst, exc.message) from None

    def _expand_words(self, inst: ins.Instruction, word: str, env: _Env) -> list[str]:
        try:
            return list(self.lex.process_words(word, env.items))
        except PybuildError as exc:
            raise self._fail(inst, exc.message) from None

    def _platform_args(self) -> dict[str, str]:
        t, b = self.target_platform, self.build_platform
        return {
            "BUILDPLATFORM": str(b), "BUILDOS": b.os, "BUILDARCH": b.architecture,
            "BUILDVARIANT": b.variant,
            "TARGETPLATFORM": str(t), "TARGETOS": t.os, "TARGETARCH": t.architecture,
            "TARGETVARIANT": t.variant,
        }

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

    # -- stages -------------------------------------------------------------------------

    def run(self, nodes: list) -> FrontendResult:  # type: ignore[type-arg]
        meta_args: list[ins.ArgInstruction] = []
        current: _Stage | None = None
        for node in nodes:
            inst = ins.parse_instruction(node, self.opts.filename)
            if isinstance(inst, ins.FromInstruction):
                current = _Stage(index=len(self.stages), name=inst.name, base_name=inst.image,
                                 from_=inst, commands=[])
                self.stages.append(current)
            elif current is None:
                if not isinstance(inst, ins.ArgInstruction):
                    raise inst.loc.error(
                        f"{inst.keyword} cannot come before the first FROM; only ARG can",
                    )
                meta_args.append(inst)
            else:
                current.commands.append(inst)
        if not self.stages:
            raise DockerfileSyntaxError(
                "dockerfile contains no stages to build",
                location=SourceLocation(self.opts.filename, 1, 1),
                hint="add a FROM instruction, e.g. FROM busybox",
            )
        names = {s.name: s for s in self.stages if s.name}
        if len(names) != len([s for s in self.stages if s.name]):
            seen: set[str] = set()
            for s in self.stages:
                if s.name in seen:
                    raise s.from_.loc.error(f"duplicate stage name {s.name!r}",
                                            hint="each FROM ... AS name must be unique")
                if s.name:
                    seen.add(s.name)

        self.global_args = self._meta_args(meta_args)
        target = self._target_stage()
        self._link_stages()
        for stage in self._reachable(target):
            self._dispatch_stage(stage)
        return self._result(target)

    def _meta_args(self, meta: list[ins.ArgInstruction]) -> _Env:
        env = _Env(dict(self._platform_args()))
        env.set("TARGETSTAGE", self.opts.target or "default")
        for inst in meta:
            for decl in inst.args:
                if decl.key in self.build_args:
                    env.set(decl.key, self.build_args[decl.key])
                elif decl.value is not None:
                    env.set(decl.key, self._expand(inst, decl.value, env))
        for key in self._platform_args():
            if key in self.build_args:
                env.set(key, self.build_args[key])
        return env

    def _target_stage(self) -> _Stage:
        if not self.opts.target:
            return self.stages[-1]
        want = self.opts.target.lower()
        for s in self.stages:
            if s.name == want:
                return s
        import difflib

        close = difflib.get_close_matches(want, [s.name for s in self.stages if s.name], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"target stage {self.opts.target!r} could not be found{hint}",
                        code="bad-target")

    def _find_stage(self, name: str, before: int) -> _Stage | None:
        lowered = name.lower()
        for s in self.stages[:before]:
            if s.name and s.name == lowered:
                return s
        if name.isdigit():
            idx = int(name)
            return self.stages[idx] if idx < len(self.stages) else None
        return None

    def _link_stages(self) -> None:
        for s in self.stages:
            base_name = self._expand_from(s.from_, s.from_.image)
            s.base_name = base_name
            for prev in self.stages[: s.index]:
                # FROM matches earlier stage names as written (they are lower-case).
                if prev.name and prev.name == base_name:
                    s.base = prev
                    s.deps.add(prev.index)
            for inst in s.commands:
                for ref in self._stage_refs(inst):
                    dep = self._stage_ref(s, inst, ref)
                    if dep is not None:
                        s.deps.add(dep.index)

    def _stage_refs(self, inst: ins.Instruction) -> list[str]:
        if isinstance(inst, ins.CopyInstruction) and inst.from_:
            return [inst.from_]
        if isinstance(inst, ins.RunInstruction):
            refs = []
            for spec in inst.mounts:
                m = re.search(r"(?:^|,)\s*from=([^,]*)", spec, re.IGNORECASE)
                if m:
                    refs.append(m.group(1).strip('"'))
            return refs
        return []

    def _stage_ref(self, stage: _Stage, inst: ins.Instruction, ref: str) -> _Stage | None:
        lowered = ref.lower()
        for s in self.stages:
            if s.name and s.name == lowered:
                if s.index >= stage.index:
                    raise self._fail(inst, f"cannot copy from stage {ref!r}, it needs to be "
                                     f"defined before current stage {stage.display!r}")
                return s
        if ref.isdigit():
            idx = int(ref)
            if idx >= len(self.stages):
                raise self._fail(inst, f"invalid stage index {idx}")
            if idx >= stage.index:
                raise self._fail(inst, f"cannot copy from stage {ref!r}, it needs to be "
                                 f"defined before current stage {stage.display!r}")
            return self.stages[idx]
        return None

    def _reachable(self, target: _Stage) -> list[_Stage]:
        keep: set[int] = set()
        stack = [target.index]
        while stack:
            i = stack.pop()
            if i in keep:
                continue
            keep.add(i)
            stack.extend(self.stages[i].deps)
        return [s for s in self.stages if s.index in keep]

    def _expand_from(self, inst: ins.FromInstruction, word: str) -> str:
        value = self._expand(inst, word, self.global_args)
        if not value:
            raise self._fail(inst, f"base name ({word}) should not be blank")
        return value

    # -- dispatch -----------------------------------------------------------------------

    def _dispatch_stage(self, s: _Stage) -> None:
        inst = s.from_
        platform = self.target_platform
        if inst.platform:
            text = self._expand(inst, inst.platform, self.global_args)
            if not text:
                raise self._fail(inst, f"empty platform value from expression {inst.platform}")
            try:
                platform = Platform.parse(text)
            except UserError as exc:
                raise self._fail(inst, exc.message) from None
        s.ignore_cache = self.opts.no_cache or (s.name in self.opts.no_cache_filter)
        if s.base is not None:
            base = s.base
            s.state = base.state
            s.platform = base.platform
            s.config = ContainerConfig(**{
                f: getattr(base.config, f) for f in ContainerConfig.__dataclass_fields__
            })
            s.config = _replace(s.config, on_build=())
            s.env = base.env.copy()
            s.build_args = list(base.build_args)
            s.history = list(base.history)
            s.base_created = base.base_created
            s.image_os, s.image_arch, s.image_variant = (
                base.image_os, base.image_arch, base.image_variant)
            s.author = base.author
            triggers = base.config.on_build
        elif s.base_name == "scratch":
            s.state = None
            s.platform = platform
            s.config = ContainerConfig(env=(f"PATH={DEFAULT_PATH}",), working_dir="/")
            s.env = _Env({"PATH": DEFAULT_PATH})
            s.image_os, s.image_arch, s.image_variant = (
                platform.os, platform.architecture, platform.variant)
            triggers = ()
        else:
            try:
                resolved = self.resolver.resolve(s.base_name, platform)
            except UserError as exc:
                raise self._fail(inst, exc.message, hint=exc.hint) from None
            cfg = resolved.config
            s.platform = platform
            s.image_os = cfg.os or platform.os
            s.image_arch = cfg.architecture or platform.architecture
            s.image_variant = cfg.variant
            s.history = list(cfg.history)
            s.base_created = cfg.created
            s.author = cfg.author
            env = list(cfg.config.env)
            if not any(e.startswith("PATH=") for e in env):
                env.append(f"PATH={DEFAULT_PATH}")
            s.config = _replace(cfg.config, env=tuple(env), on_build=())
            s.env = _Env()
            for item in env:
                k, _, v = item.partition("=")
                s.env.set(k, v)
            if cfg.diff_ids:
                s.state = self.dag.add(
                    SourceOp(identifier=f"docker-image://{resolved.name}@{resolved.digest}",
                             attrs=(("platform", str(platform)),)),
                    self._meta(s, inst, f"FROM {resolved.name}@{resolved.digest}",
                               counted=True),
                )
            else:
                s.state = None  # an image without layers is scratch
            triggers = cfg.config.on_build
        if self.opts.platform is not None or inst.platform:
            s.image_os, s.image_arch, s.image_variant = (
                platform.os, platform.architecture, platform.variant)
        commands = list(s.commands)
        if triggers:
            commands = self._onbuild(s, triggers) + commands
        s.commands = commands
        for cmd in commands:
            self._dispatch(s, cmd)
        s.dispatched = True

    def _onbuild(self, s: _Stage, triggers: tuple[str, ...]) -> list[ins.Instruction]:
        from pybuild.frontend.dockerfile.parser import parse

        out = []
        for trigger in triggers:
            try:
                parsed = parse(trigger.encode(), self.opts.filename)
            except UserError as exc:
                raise self._fail(s.from_, f"invalid ONBUILD trigger {trigger!r}: "
                                 f"{exc.message}") from None
            for node in parsed.ast.children:
                node.start_line, node.end_line = s.from_.loc.start_line, s.from_.loc.end_line
                out.append(ins.parse_instruction(node, self.opts.filename))
        return out

    def _meta(self, s: _Stage, inst: ins.Instruction, text: str,
              counted: bool = True) -> OpMetadata:
        total = len(s.commands) + 1
        if counted:
            s.cmd_index += 1
        prefix = f"[{s.name + ' ' if s.name else ''}{s.cmd_index}/{total}] "
        return OpMetadata(description=prefix + text, stage=s.display,
                          filename=inst.loc.filename, start_line=inst.loc.start_line,
                          end_line=inst.loc.end_line, ignore_cache=s.ignore_cache)

    def _history(self, s: _Stage, created_by: str, *, layer: bool, buildkit: bool = False) -> None:
        if buildkit:
            created_by += " # buildkit"
        s.history.append(History(created_by=created_by, comment="buildkit.dockerfile.v0",
                                 empty_layer=not layer))

    def _dispatch(self, s: _Stage, inst: ins.Instruction) -> None:
        match inst:
            case ins.EnvInstruction():
                self._env(s, inst)
            case ins.LabelInstruction():
                self._label(s, inst)
            case ins.ArgInstruction():
                self._arg(s, inst)
            case ins.RunInstruction():
                self._run(s, inst)
            case ins.CopyInstruction():
                self._copy(s, inst)
            case ins.WorkdirInstruction():
                self._workdir(s, inst)
            case ins.UserInstruction():
                user = self._expand(inst, inst.user, s.env)
                s.config = _replace(s.config, user=user)
                self._history(s, f"USER {user}", layer=False)
            case ins.CmdInstruction():
                args = self._with_shell(s, inst.cmd_line) if inst.prepend_shell else inst.cmd_line
                s.config = _replace(s.config, cmd=tuple(args), args_escaped=True)
                s.cmd_set = True
                self._history(s, f"CMD {_go_quote_list(args)}", layer=False)
            case ins.EntrypointInstruction():
                args = self._with_shell(s, inst.cmd_line) if inst.prepend_shell else inst.cmd_line
                s.config = _replace(s.config, entrypoint=tuple(args))
                if not s.cmd_set:
                    s.config = _replace(s.config, cmd=None)
                self._history(s, f"ENTRYPOINT {_go_quote_list(args)}", layer=False)
            case ins.ExposeInstruction():
                self._expose(s, inst)
            case ins.VolumeInstruction():
                vols = [self._expand(inst, v, s.env) for v in inst.volumes]
                if any(v == "" for v in vols):
                    raise self._fail(inst, "VOLUME specified can not be an empty string")
                s.config = _replace(s.config, volumes=tuple(sorted(set(s.config.volumes)
                                                                   | set(vols))))
                self._history(s, f"VOLUME [{' '.join(vols)}]", layer=False)
            case ins.StopSignalInstruction():
                sig = self._expand(inst, inst.signal, s.env)
                _validate_signal(inst, sig)
                s.config = _replace(s.config, stop_signal=sig)
                self._history(s, f"STOPSIGNAL {sig}", layer=False)
            case ins.ShellInstruction():
                s.config = _replace(s.config, shell=tuple(inst.shell))
                self._history(s, f"SHELL [{' '.join(inst.shell)}]", layer=False)
            case ins.MaintainerInstruction():
                s.author = inst.maintainer
                self._history(s, f"MAINTAINER {inst.maintainer}", layer=False)
            case ins.HealthcheckInstruction():
                hc = Healthcheck(test=tuple(inst.test), interval=inst.interval,
                                 timeout=inst.timeout, start_period=inst.start_period,
                                 start_interval=inst.start_interval, retries=inst.retries)
                s.config = _replace(s.config, healthcheck=hc)
                self._history(s, f"HEALTHCHECK {_healthcheck_string(hc)}", layer=False)
            case ins.OnbuildInstruction():
                s.config = _replace(s.config, on_build=(*s.config.on_build, inst.expression))
            case _:
                raise self._fail(inst, f"{inst.keyword} is not supported here")

    def _with_shell(self, s: _Stage, args: list[str]) -> list[str]:
        shell = list(s.config.shell) or list(DEFAULT_SHELL)
        return [*shell, " ".join(args)]

    def _env(self, s: _Stage, inst: ins.EnvInstruction) -> None:
        env_before = s.env.copy()  # all words of one instruction see the same environment
        parts = []
        config_env = list(s.config.env)
        for kv in inst.pairs:
            key = self._expand(inst, kv.key, env_before)
            value = self._expand(inst, kv.value, env_before)
            if not key:
                raise self._fail(inst, "ENV names can not be blank")
            s.env.set(key, value)
            config_env = _add_env(config_env, key, value)
            parts.append(f"{key}={value}")
        s.config = _replace(s.config, env=tuple(config_env))
        self._history(s, "ENV " + " ".join(parts), layer=False)

    def _label(self, s: _Stage, inst: ins.LabelInstruction) -> None:
        labels = dict(s.config.labels)
        parts = []
        for kv in inst.pairs:
            key = self._expand(inst, kv.key, s.env)
            value = self._expand(inst, kv.value, s.env)
            if not key:
                raise self._fail(inst, "LABEL names can not be blank")
            labels[key] = value
            parts.append(f"{key}={value}")
        s.config = _replace(s.config, labels=tuple(sorted(labels.items())))
        self._history(s, "LABEL " + " ".join(parts), layer=False)

    def _arg(self, s: _Stage, inst: ins.ArgInstruction) -> None:
        parts = []
        for decl in inst.args:
            value: str | None
            if decl.key in self.build_args:
                value = self.build_args[decl.key]
            elif decl.value is not None:
                value = self._expand(inst, decl.value, s.env)
            else:
                value = self.global_args.get(decl.key)
            if value is not None and decl.key not in NON_ENV_ARGS:
                s.env.set(decl.key, value)
            s.build_args.append((decl.key, value))
            parts.append(decl.key if value is None else f"{decl.key}={value}")
        self._history(s, "ARG " + " ".join(parts), layer=False)

    def _expose(self, s: _Stage, inst: ins.ExposeInstruction) -> None:
        ports = []
        for word in inst.ports:
            ports.extend(self._expand_words(inst, word, s.env))
        out = set(s.config.exposed_ports)
        for p in ports:
            port, _, proto = p.partition("/")
            proto = (proto or "tcp").lower()
            if not re.fullmatch(r"\d+(-\d+)?", port) or proto not in ("tcp", "udp", "sctp"):
                raise self._fail(inst, f"invalid port specification: {p!r}",
                                 hint="use PORT or PORT/PROTOCOL, e.g. 8080/tcp")
            if "-" in port:
                lo, hi = (int(x) for x in port.split("-"))
                out.update(f"{n}/{proto}" for n in range(lo, hi + 1))
            else:
                out.add(f"{port}/{proto}")
        s.config = _replace(s.config, exposed_ports=tuple(sorted(out)))
        self._history(s, "EXPOSE map[" + " ".join(f"{p}:{{}}" for p in sorted(
            {(q if "/" in q else q + "/tcp") for q in ports})) + "]", layer=False)

    def _workdir(self, s: _Stage, inst: ins.WorkdirInstruction) -> None:
        path = self._expand(inst, inst.path, s.env)
        wd = posixpath.normpath(posixpath.join(s.config.working_dir or "/", path))
        if wd.startswith("//"):
            wd = wd[1:]
        s.config = _replace(s.config, working_dir=wd)
        layer = wd != "/"
        if layer:
            chown = _chown(s.config.user) if s.config.user else None
            s.state = self.dag.add(
                FileOp(base=s.state, actions=(MkdirAction(path=wd, mode=0o755, chown=chown,
                                                          make_parents=True),)),
                self._meta(s, inst, f"WORKDIR {wd}"),
            )
        self._history(s, f"WORKDIR {wd}", layer=layer)

    def _run(self, s: _Stage, inst: ins.RunInstruction) -> None:
        args = list(inst.cmd_line)
        extra_mounts: list[Mount] = []
        if inst.heredocs:
            args = self._run_heredoc(s, inst, args, extra_mounts)
        if inst.prepend_shell:
            args = self._with_shell(s, args)
        mounts = [self._run_mount(s, inst, spec) for spec in inst.mounts]
        network = (inst.network or self.opts.network or "default").lower()
        if network not in ("default", "none", "host"):
            raise self._fail(inst, f"unsupported network mode {network!r}",
                             hint="use default, none or host")
        security = (inst.security or "sandbox").lower()
        if security not in ("sandbox", "insecure"):
            raise self._fail(inst, f"unsupported security mode {security!r}")
        proxy = tuple(f"{k}={v}" for k, v in sorted(self.build_args.items())
                      if k.upper() in PROXY_ARGS and s.env.get(k) is None)
        op = ExecOp(
            rootfs=s.state,
            args=tuple(args),
            env=tuple(s.env.as_list()),
            cwd=s.config.working_dir or "/",
            user=s.config.user or "",
            network=network,
            security=security,
            mounts=tuple([*mounts, *extra_mounts]),
            proxy_env=proxy,
        )
        text = "RUN " + " ".join(inst.cmd_line)
        s.state = self.dag.add(op, self._meta(s, inst, text))
        self._history(s, "RUN " + _run_command_string(args, s.build_args, s.env), layer=True,
                      buildkit=True)

    def _run_heredoc(self, s: _Stage, inst: ins.RunInstruction, args: list[str],
                     extra: list[Mount]) -> list[str]:
        from pybuild.frontend.dockerfile.parser import chomp_heredoc_content

        if len(args) != 1 or not inst.prepend_shell:
            raise self._fail(inst, "parsing produced an invalid run command")
        first = inst.heredocs[0]
        if len(inst.heredocs) == 1 and re.fullmatch(r"\d*<<-?\s*['\"]?" + re.escape(first.name)
                                                    + r"['\"]?", args[0].strip()):
            data = first.content
            if first.chomp:
                data = chomp_heredoc_content(data)
            if data.startswith("#!") and s.image_os != "windows":
                src = self.dag.add(FileOp(base=None, actions=(
                    MkfileAction(path="/" + first.name, data=data.encode(), mode=0o755),)))
                extra.append(Mount(target="/dev/pipes", type="bind", input=src,
                                   readonly=True))
                inst.prepend_shell = False
                return [posixpath.join("/dev/pipes", first.name)]
            return [data]
        text = args[0]
        for h in inst.heredocs:
            text += "\n" + h.content + h.name
        return [text]

    def _run_mount(self, s: _Stage, inst: ins.RunInstruction, spec: str) -> Mount:
        try:
            m: RunMount = parse_run_mount(spec, lambda w: self._expand(inst, w, s.env),
                                          s.config.working_dir or "/")
        except UserError as exc:
            raise self._fail(inst, exc.message) from None
        source_input: Input | None = None
        if m.type in ("bind", "cache") and (m.from_ or m.type == "bind"):
            source_input = self._source_for(s, inst, m.from_) if m.from_ else self._context()
        selector = posixpath.normpath("/" + m.source) if m.source else "/"
        match m.type:
            case "bind":
                return Mount(target=m.target, type="bind", input=source_input, selector=selector,
                             readonly=m.readonly)
            case "cache":
                return Mount(target=m.target, type="cache", input=source_input,
                             selector=selector, readonly=m.readonly,
                             cache=CacheMountOpts(id=m.id, sharing=m.sharing,
                                                  mode=0o755 if m.mode is None else m.mode,
                                                  uid=m.uid or 0, gid=m.gid or 0))
            case "tmpfs":
                return Mount(target=m.target, type="tmpfs", readonly=False, tmpfs_size=m.size)
            case "secret":
                return Mount(target=m.target, type="secret", readonly=True,
                             secret=SecretOpts(id=m.id, required=m.required,
                                               mode=0o400 if m.mode is None else m.mode,
                                               uid=m.uid or 0, gid=m.gid or 0, env=m.env,
                                               file=bool(m.target)))
            case _:
                return Mount(target=m.target or "/run/buildkit/ssh_agent.0", type="ssh",
                             readonly=True, ssh_id=m.id)

    def _source_for(self, s: _Stage, inst: ins.Instruction, ref: str) -> Input | None:
        dep = self._stage_ref(s, inst, ref)
        if dep is not None:
            if not dep.dispatched:
                raise self._fail(inst, f"cannot copy from stage {ref!r}, it needs to be "
                                 f"defined before current stage {s.display!r}")
            return dep.state
        platform = s.platform or self.target_platform
        try:
            resolved = self.resolver.resolve(ref, platform)
        except UserError as exc:
            raise self._fail(inst, exc.message, hint=exc.hint) from None
        if not resolved.config.diff_ids:
            return None
        return self.dag.add(
            SourceOp(identifier=f"docker-image://{resolved.name}@{resolved.digest}",
                     attrs=(("platform", str(platform)),)),
            OpMetadata(description=f"[internal] load {resolved.name}"),
        )

    def _copy(self, s: _Stage, inst: ins.CopyInstruction) -> None:
        env = s.env
        if inst.from_ and "$" in inst.from_:
            expanded = self._expand(inst, inst.from_, env)
            if expanded != inst.from_:
                raise self._fail(inst, "variable expansion is not supported for --from, define "
                                 "a new stage with FROM using ARG from global scope as a "
                                 "workaround")
        sources = [self._expand(inst, src, env) for src in inst.sources]
        dest_raw = self._expand(inst, inst.dest, env)
        chown_text = self._expand(inst, inst.chown, env) if inst.chown else ""
        chmod = self._expand(inst, inst.chmod, env) if inst.chmod else ""
        if chmod:
            _validate_chmod(self, inst, chmod)
        if inst.checksum and not inst.is_add:
            raise self._fail(inst, "checksum can't be specified for COPY")
        for src in sources:
            if src.startswith(("http://", "https://")) or src.startswith("git@"):
                if not inst.is_add:
                    raise self._fail(inst, "source can't be a URL for COPY")
                raise self._fail(inst, f"ADD of remote sources ({src}) is not supported yet",
                                 hint="download the file into the build context and COPY it")
        wd = s.config.working_dir or "/"
        dest_is_dir = dest_raw.endswith("/") or dest_raw in ("", ".") or dest_raw.endswith("/.")
        dest = dest_raw if dest_raw.startswith("/") else posixpath.join(wd, dest_raw or ".")
        dest = posixpath.normpath(dest)
        if dest.startswith("//"):
            dest = dest[1:]
        chown = _chown(chown_text) if chown_text else None
        if inst.from_:
            source = self._source_for(s, inst, inst.from_)
            from_context = False
        else:
            source = self._context()
            from_context = True
        actions: list[CopyAction] = []
        if sources:
            if source is None:
                source = self.dag.add(FileOp(base=None, actions=(
                    MkdirAction(path="/", mode=0o755),)))
            for src in sources:
                actions.append(CopyAction(
                    source=source, sources=(src,), dest=dest, chown=chown, chmod=chmod,
                    parents=inst.parents, exclude=tuple(inst.exclude),
                    from_context=from_context, dest_is_dir=dest_is_dir,
                    unpack=inst.is_add if inst.unpack is None else inst.unpack,
                ))
        for h in inst.heredocs:
            data = h.content
            if h.chomp:
                from pybuild.frontend.dockerfile.parser import chomp_heredoc_content

                data = chomp_heredoc_content(data)
            if h.expand:
                data = self._expand_heredoc(inst, data, env)
            doc = self.dag.add(FileOp(base=None, actions=(
                MkfileAction(path="/" + h.name, data=data.encode(), mode=0o644),)))
            actions.append(CopyAction(source=doc, sources=(h.name,), dest=dest, chown=chown,
                                      chmod=chmod, from_context=False, dest_is_dir=dest_is_dir))
        history = "ADD" if inst.is_add else "COPY"
        if inst.parents:
            history += " --parents"
        if chown_text:
            history += f" --chown={chown_text}"
        if chmod:
            history += f" --chmod={chmod}"
        for src in sources:
            history += " " + src
        for h in inst.heredocs:
            history += " <<" + h.name
        history += " " + dest_raw
        text = f"{inst.keyword} " + " ".join([*inst.sources, *[f"<<{h.name}" for h in
                                                               inst.heredocs], inst.dest])
        s.state = self.dag.add(FileOp(base=s.state, actions=tuple(actions)),
                               self._meta(s, inst, text))
        self._history(s, history, layer=True, buildkit=True)

    def _expand_heredoc(self, inst: ins.Instruction, data: str, env: _Env) -> str:
        from pybuild.frontend.shell.lex import ShellLex

        lex = ShellLex(escape_token="\\")
        lex.raw_quotes = True
        try:
            return str(lex.process_word(data, env.items))
        except PybuildError as exc:
            raise self._fail(inst, exc.message) from None

    # -- result -------------------------------------------------------------------------

    def _result(self, target: _Stage) -> FrontendResult:
        labels = dict(target.config.labels)
        labels.update(self.opts.labels)
        config = ImageConfig(
            architecture=target.image_arch or self.target_platform.architecture,
            os=target.image_os or "linux",
            variant=target.image_variant,
            author=target.author,
            created=target.base_created,
            config=_replace(target.config, labels=tuple(sorted(labels.items()))),
            history=tuple(target.history),
        )
        return FrontendResult(
            definition=self.dag.build(target.state),
            config=config,
            stage_name=target.display,
            warnings=tuple(self.warnings),
        )


# --- helpers ---------------------------------------------------------------------------


def _replace(cfg: ContainerConfig, **changes: object) -> ContainerConfig:
    from dataclasses import replace

    return replace(cfg, **changes)  # type: ignore[arg-type]


def _add_env(env: list[str], key: str, value: str) -> list[str]:
    out = list(env)
    for i, item in enumerate(out):
        if item.partition("=")[0] == key:
            out[i] = f"{key}={value}"
            return out
    out.append(f"{key}={value}")
    return out


def _chown(text: str) -> Chown:
    user, _, group = text.partition(":")
    return Chown(user=user, group=group)


def _run_command_string(args: list[str], build_args: list[tuple[str, str | None]],
                        env: _Env) -> str:
    items: dict[str, str] = {}
    for key, value in build_args:
        v = env.get(key)
        items[key] = v if v is not None else (value or "")
    prefix = [f"|{len(items)}", *(f"{k}={v}" for k, v in items.items())] if items else []
    return " ".join([*prefix, *args])


def _go_quote_list(args: list[str]) -> str:
    from pybuild.frontend.dockerfile.dump import go_quote

    return "[" + " ".join(go_quote(a) for a in args) + "]"


def _go_duration(ns: int) -> str:
    if ns == 0:
        return "0s"
    out = ""
    h, rem = divmod(ns, 3_600_000_000_000)
    m, rem = divmod(rem, 60_000_000_000)
    if h:
        out += f"{h}h"
    if h or m:
        out += f"{m}m"
    sec = rem / 1e9
    out += (f"{sec:.9f}".rstrip("0").rstrip(".") or "0") + "s"
    return out


def _healthcheck_string(hc: Healthcheck) -> str:
    return (f"{{Test:[{' '.join(hc.test)}] Interval:{_go_duration(hc.interval)} "
            f"Timeout:{_go_duration(hc.timeout)} StartPeriod:{_go_duration(hc.start_period)} "
            f"StartInterval:{_go_duration(hc.start_interval)} Retries:{hc.retries}}}")


_SIGNALS = {
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
    "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
    "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
}


def _validate_signal(inst: ins.Instruction, sig: str) -> None:
    name = sig.upper().removeprefix("SIG")
    if sig.isdigit() and int(sig) > 0:
        return
    if name in _SIGNALS or re.fullmatch(r"RTMIN(\+\d+)?|RTMAX(-\d+)?", name):
        return
    raise inst.loc.error(f"Invalid signal: {sig}", cls=UserError)


_SYMBOLIC_MODE = re.compile(r"^([ugoa]*[-+=]([rwxXst]*|[ugo]))(,[ugoa]*[-+=]([rwxXst]*|[ugo]))*$")


def _validate_chmod(conv: _Converter, inst: ins.CopyInstruction, chmod: str) -> None:
    if re.fullmatch(r"[0-7]+", chmod):
        if int(chmod, 8) > 0o7777:
            raise conv._fail(inst, f"invalid chmod parameter: '{chmod}'. it should be octal "
                             "string and between 0 and 07777")
        return
    if re.fullmatch(r"[0-9]+\w*", chmod) or not _SYMBOLIC_MODE.match(chmod):
        raise conv._fail(inst, f"invalid chmod parameter: '{chmod}'. it should be octal "
                         "string and between 0 and 07777")
