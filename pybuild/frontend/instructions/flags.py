"""Instruction flags (BuildKit's `instructions/bflag.go`)."""

from __future__ import annotations

from pybuild.frontend.instructions.loc import Loc
from pybuild.frontend.suggest import with_suggestion


class Flags:
    """BuildKit's BFlags: flags are declared per instruction, then `parse()` checks them in
    the order written: `--name=value`, or bare `--name` for a bool; `--` stops parsing."""

    def __init__(self, raw: list[str], loc: Loc) -> None:
        self._raw = raw
        self._loc = loc
        self._types: dict[str, str] = {}
        self._values: dict[str, str] = {}
        self._lists: dict[str, list[str]] = {}
        self.used: set[str] = set()

    def add_bool(self, name: str) -> None:
        self._types[name] = "bool"

    def add_string(self, name: str, default: str = "") -> None:
        self._types[name] = "string"
        self._values[name] = default

    def add_strings(self, name: str) -> None:
        self._types[name] = "strings"
        self._lists[name] = []

    def parse(self) -> None:
        for arg in self._raw:
            if arg == "--":
                return
            if not arg.startswith("--"):
                raise self._loc.error(f"arg should start with -- : {arg}")
            name, eq, value = arg[2:].partition("=")
            kind = self._types.get(name)
            if kind is None:
                raise self._loc.error(with_suggestion(f"unknown flag: --{name}", name,
                                                      list(self._types)))
            if name in self.used and kind != "strings":
                raise self._loc.error(f"duplicate flag specified: {name}")
            self.used.add(name)
            if kind == "bool":
                if eq and value == "":
                    raise self._loc.error(f"missing a value on flag: {name}")
                lower = value.lower()
                if lower not in ("", "true", "false"):
                    raise self._loc.error(
                        f"expecting boolean value for flag {name}, not: {value}")
                self._values[name] = "false" if lower == "false" else "true"
            elif not eq:
                raise self._loc.error(f"missing a value on flag: {name}")
            elif kind == "string":
                self._values[name] = value
            else:
                self._lists[name].append(value)

    def string(self, name: str) -> str:
        return self._values.get(name, "")

    def boolean(self, name: str) -> bool:
        return self._values.get(name) == "true"

    def optional_bool(self, name: str) -> bool | None:
        return self.boolean(name) if name in self.used else None

    def strings(self, name: str) -> tuple[str, ...]:
        return tuple(self._lists.get(name, []))
