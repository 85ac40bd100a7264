"""in-toto Statements (github.com/in-toto/attestation), as BuildKit wraps its attestations.

BuildKit up to v0.30 writes `https://in-toto.io/Statement/v0.1`; v0.31+ writes
`https://in-toto.io/Statement/v1` (same fields). A statement's subjects are the image
manifest it describes, named as BuildKit names them: one `pkg:docker/NAME@TAG?platform=…`
per image name the build exports, each with the manifest digest; a build without a name
gets the subject name `_` (the in-toto spec's "not important").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from pybuild.attest.purl import image_purl
from pybuild.digest import Digest
from pybuild.errors import UserError
from pybuild.oci.platform import Platform

STATEMENT_V01: Final = "https://in-toto.io/Statement/v0.1"
STATEMENT_V1: Final = "https://in-toto.io/Statement/v1"
StatementType = Literal["https://in-toto.io/Statement/v0.1", "https://in-toto.io/Statement/v1"]
MEDIA_TYPE = "application/vnd.in-toto+json"
ANNOTATION_PREDICATE_TYPE = "in-toto.io/predicate-type"


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    name: str
    digest: tuple[tuple[str, str], ...]  # (algorithm, hex), e.g. (("sha256", "ab…"),)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "digest": dict(self.digest)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Statement:
    """A statement; `predicate` is its canonical JSON (kept as bytes: the value is frozen)."""

    predicate_type: str
    subjects: tuple[Subject, ...]
    predicate: bytes
    type: StatementType = STATEMENT_V01

    @classmethod
    def of(cls, predicate_type: str, predicate: Any, subjects: Sequence[Subject], *,
           statement_type: StatementType = STATEMENT_V01) -> Statement:
        data = json.dumps(predicate, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()
        return cls(predicate_type=predicate_type, subjects=tuple(subjects), predicate=data,
                   type=statement_type)

    def to_json(self) -> dict[str, Any]:
        return {"_type": self.type, "predicateType": self.predicate_type,
                "subject": [s.to_json() for s in self.subjects],
                "predicate": json.loads(self.predicate)}

    def encode(self) -> bytes:
        """The blob stored as an attestation layer (byte-stable)."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()

    @classmethod
    def parse(cls, data: bytes, *, where: str = "in-toto statement") -> Statement:
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"{where}: not valid JSON ({exc})", code="bad-attestation") from None
        if not isinstance(raw, dict) or raw.get("_type") not in (STATEMENT_V01, STATEMENT_V1):
            raise UserError(f"{where}: not an in-toto statement", code="bad-attestation")
        subjects = []
        for s in raw.get("subject") or ():
            if isinstance(s, dict) and isinstance(s.get("digest"), dict):
                subjects.append(Subject(name=str(s.get("name", "")), digest=tuple(
                    sorted((str(k), str(v)) for k, v in s["digest"].items()))))
        return cls.of(str(raw.get("predicateType", "")), raw.get("predicate"), subjects,
                      statement_type=raw["_type"])


def image_subjects(names: Sequence[str], platform: Platform | None,
                   manifest: Digest) -> tuple[Subject, ...]:
    """BuildKit's default subjects for the image manifest `manifest` of `platform`."""
    digest = ((manifest.algorithm, manifest.hex),)
    out = [Subject(name=image_purl(n, platform), digest=digest) for n in names if n]
    return tuple(out) or (Subject(name="_", digest=digest),)
