"""EXPOSE (BuildKit's `convert_expose.go`): port specs and their build checks."""

from __future__ import annotations

import ipaddress
import re

from pybuild.errors import PybuildError
from pybuild.frontend.dockerfile2llb import lint as rules
from pybuild.frontend.dockerfile2llb.history import commit
from pybuild.frontend.dockerfile2llb.state import DispatchContext, DispatchState, fail
from pybuild.frontend.instructions import types as ins


def dispatch_expose(ctx: DispatchContext, d: DispatchState, inst: ins.ExposeInstruction
                    ) -> None:
    words: list[str] = []
    for p in inst.ports:
        try:
            words.extend(ctx.lex.process_words(p, d.env.items))
        except PybuildError as exc:
            raise fail(inst.loc, exc.message) from None
    ports: list[str] = []
    lint = ctx.lint_for(inst)
    for w in words:
        proto = w.rpartition(":")[2].partition("/")[2]
        if proto and proto != proto.lower():
            lint.run(rules.EXPOSE_PROTO_CASING, inst.loc, w)
        parts = w.split(":")  # splitParts: [ip:][hostport:]port
        if any(parts[:-1]):  # an IP address or a host port: meaningless in an image
            lint.run(rules.EXPOSE_INVALID_FORMAT, inst.loc, w)
        try:
            ports.extend(parse_port_spec(w))
        except ValueError as exc:
            raise fail(inst.loc, str(exc),
                       hint="use PORT, PORT/PROTO or START-END/PROTO, e.g. 8080/tcp") from None
    d.image.set(exposed_ports=tuple(sorted(set(d.image.config.exposed_ports) | set(ports))))
    commit(ctx, d, f"EXPOSE [{' '.join(ports)}]")


def parse_port_spec(raw: str) -> list[str]:
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
        addr = ip[1:-1] if ip.startswith("[") and ip.endswith("]") else ip
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise ValueError(f"invalid IP address: {ip}") from None
    try:
        start, end = port_range(port)
    except ValueError:
        raise ValueError(f"invalid containerPort: {port}") from None
    if host:
        try:
            hs, he = port_range(host)
        except ValueError:
            raise ValueError(f"invalid hostPort: {host}") from None
        if end - start != he - hs and end != start:
            raise ValueError(f"invalid ranges specified for container and host Ports: {port} "
                             f"and {host}")
    return [f"{n}/{proto}" for n in range(start, end + 1)]


def port_range(text: str) -> tuple[int, int]:
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
