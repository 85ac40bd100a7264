"""Image references: `busybox`, `localhost:5000/a/b:tag@sha256:...`, Docker Hub normalisation."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pybuild.digest import Digest, is_digest
from pybuild.errors import UserError

DOCKER_HUB = "docker.io"
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DOMAIN = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*"
    r"[a-zA-Z0-9])?))*(?::[0-9]+)?$|^\[[a-fA-F0-9:]+\](?::[0-9]+)?$"
)


# distribution/reference's RepositoryNameTotalLengthMax: the path after normalisation
# (`library/` included), as `docker build -t` refuses it; a tag has at most 128 characters.
NAME_TOTAL_LENGTH_MAX = 255


def _shown(text: str, limit: int = 80) -> str:
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text)} characters)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reference:
    """A fully qualified reference: domain, path, optional tag, optional digest."""

    domain: str
    path: str
    tag: str = ""
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str, *, default_tag: str = "latest") -> Reference:
        original = text
        if not text or text != text.strip():
            raise UserError(f"invalid reference format: {original!r}", code="bad-reference")
        digest: Digest | None = None
        if "@" in text:
            text, _, dg = text.partition("@")
            if not is_digest(dg):
                raise UserError(
                    f"invalid reference format: {original!r} (bad digest)", code="bad-reference"
                )
            digest = Digest(dg)
        tag = ""
        slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > slash:
            text, tag = text[:colon], text[colon + 1 :]
            if not _TAG.match(tag):
                raise UserError(
                    f"invalid reference format: {original!r} (bad tag {tag!r})",
                    code="bad-reference",
                )
        first, sep, rest = text.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
            domain, path = first, rest
            if not _DOMAIN.match(domain):
                raise UserError(f"invalid reference format: {original!r}", code="bad-reference")
        else:
            domain, path = DOCKER_HUB, text
        if domain == DOCKER_HUB and "/" not in path:
            path = "library/" + path
        if not path or not all(_COMPONENT.match(c) for c in path.split("/")):
            hint = " (repository names must be lowercase)" if path != path.lower() else ""
            raise UserError(
                f"invalid reference format: {original!r}{hint}", code="bad-reference"
            )
        if len(path) > NAME_TOTAL_LENGTH_MAX:  # distribution/reference's ErrNameTooLong
            raise UserError(f"invalid reference {_shown(original)}: repository name must not "
                            f"be more than {NAME_TOTAL_LENGTH_MAX} characters",
                            code="bad-reference")
        if not tag and digest is None:
            tag = default_tag
        return cls(domain=domain, path=path, tag=tag, digest=digest)

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        s = self.repository
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s

    @property
    def familiar(self) -> str:
        """The short form Docker shows: `busybox:latest`, `localhost:5000/a:b`."""
        repo = self.repository
        if self.domain == DOCKER_HUB:
            repo = self.path.removeprefix("library/")
        s = repo
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s

    def with_tag(self, tag: str) -> Reference:
        return Reference(domain=self.domain, path=self.path, tag=tag, digest=None)
