"""`Record`: frozen, slotted, keyword-only value classes that cost nothing to define.

The sandbox's wire protocol has some forty value types, imported by the daemon at its
start and by every build. As `@dataclass(frozen=True, slots=True, kw_only=True)` they
cost ~0.6 ms each to define (dataclasses compiles six methods per class with `exec`),
~25 ms in all, on the path of every build's start. A Record subclass gets the same
behaviour from generic methods instead: keyword-only `__init__` with defaults, frozen
attributes, `__slots__`, `__eq__`, `__hash__` and `__repr__` over its fields, and type
checkers treat it as a frozen keyword-only dataclass (`dataclass_transform`). Fields are
the class's annotations, in order; values should be immutable (tuples, not lists).
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar, dataclass_transform

_MISSING = object()
T = TypeVar("T", bound="Record")


@dataclass_transform(kw_only_default=True, frozen_default=True)
class _RecordType(type):
    def __new__(mcs, name: str, bases: tuple[type, ...], ns: dict[str, Any],
                **kw: Any) -> _RecordType:
        annotations: dict[str, Any] = ns.get("__annotations__", {})
        names = tuple(n for n, t in annotations.items() if not str(t).startswith("ClassVar"))
        ns["_defaults"] = {n: ns.pop(n) for n in names if n in ns}
        ns["_fields"] = names
        ns["__slots__"] = names
        return super().__new__(mcs, name, bases, ns, **kw)


class Record(metaclass=_RecordType):
    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]]
    _defaults: ClassVar[dict[str, Any]]

    def __init__(self, **values: Any) -> None:
        for name in self._fields:
            value = values.pop(name, _MISSING)
            if value is _MISSING:
                value = self._defaults.get(name, _MISSING)
                if value is _MISSING:
                    raise TypeError(f"{type(self).__name__}() needs the argument {name!r}")
            object.__setattr__(self, name, value)
        if values:
            raise TypeError(f"{type(self).__name__}() got unexpected arguments "
                            f"{', '.join(sorted(values))}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a {type(self).__name__}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._fields)

    def __hash__(self) -> int:
        return hash((type(self), *(getattr(self, n) for n in self._fields)))

    def __repr__(self) -> str:
        args = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__name__}({args})"


def fields_of(cls: type[Record]) -> tuple[str, ...]:
    """The field names of a Record class, in order."""
    return cls._fields


def replace(obj: T, **changes: Any) -> T:
    """A copy of `obj` with some fields changed (dataclasses.replace for Records)."""
    values = {n: getattr(obj, n) for n in obj._fields}
    values.update(changes)
    return type(obj)(**values)
