"""Licence names as packages declare them, turned into SPDX licence expressions.

A declared value that is an SPDX expression over known ids stays as it is; Debian's
short names (`GPL-2+`, `Expat`) and PyPI classifiers map to their SPDX ids; anything else
becomes a `LicenseRef-` (SPDX requires extracted text for those, which the writer adds).
"""

from __future__ import annotations

import re

from pybuild.attest.sbom.spdx_ids import EXCEPTION_IDS, LICENSE_IDS

_BY_LOWER = {i.lower(): i for i in LICENSE_IDS}

# Debian copyright-format short names (and common spellings elsewhere) -> SPDX ids.
_ALIASES = {
    "gpl-1": "GPL-1.0-only", "gpl-1+": "GPL-1.0-or-later",
    "gpl-2": "GPL-2.0-only", "gpl-2+": "GPL-2.0-or-later",
    "gpl-3": "GPL-3.0-only", "gpl-3+": "GPL-3.0-or-later",
    "lgpl-2": "LGPL-2.0-only", "lgpl-2+": "LGPL-2.0-or-later",
    "lgpl-2.1": "LGPL-2.1-only", "lgpl-2.1+": "LGPL-2.1-or-later",
    "lgpl-3": "LGPL-3.0-only", "lgpl-3+": "LGPL-3.0-or-later",
    "agpl-3": "AGPL-3.0-only", "agpl-3+": "AGPL-3.0-or-later",
    "gfdl-1.2": "GFDL-1.2-only", "gfdl-1.2+": "GFDL-1.2-or-later",
    "gfdl-1.3": "GFDL-1.3-only", "gfdl-1.3+": "GFDL-1.3-or-later",
    "gfdl-nis": "GFDL-1.3-no-invariants-only",
    "expat": "MIT", "mit/x11": "X11", "bsd-2-clause": "BSD-2-Clause",
    "bsd-3-clause": "BSD-3-Clause", "bsd-4-clause": "BSD-4-Clause",
    "apache-2": "Apache-2.0", "apache-2.0": "Apache-2.0", "apache 2.0": "Apache-2.0",
    "apache license 2.0": "Apache-2.0", "apache software license": "Apache-2.0",
    "artistic": "Artistic-1.0-Perl", "artistic-2": "Artistic-2.0",
    "mpl-1.1": "MPL-1.1", "mpl-2.0": "MPL-2.0", "zlib": "Zlib", "isc": "ISC",
    "psf-2": "PSF-2.0", "python-2.0": "Python-2.0", "cc0": "CC0-1.0", "cc0-1.0": "CC0-1.0",
    "bsd": "BSD-3-Clause", "new bsd": "BSD-3-Clause", "new bsd license": "BSD-3-Clause",
    "mit license": "MIT", "the mit license": "MIT", "unlicense": "Unlicense",
    "openssl": "OpenSSL", "gpl": "GPL-1.0-or-later", "lgpl": "LGPL-2.0-or-later",
}

# PyPI trove classifiers (the last component) -> SPDX ids.
_CLASSIFIERS = {
    "MIT License": "MIT", "BSD License": "BSD-3-Clause", "Apache Software License": "Apache-2.0",
    "ISC License (ISCL)": "ISC", "Python Software Foundation License": "PSF-2.0",
    "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "GNU General Public License v2 (GPLv2)": "GPL-2.0-only",
    "GNU General Public License v2 or later (GPLv2+)": "GPL-2.0-or-later",
    "GNU General Public License v3 (GPLv3)": "GPL-3.0-only",
    "GNU General Public License v3 or later (GPLv3+)": "GPL-3.0-or-later",
    "GNU Lesser General Public License v2 (LGPLv2)": "LGPL-2.0-only",
    "GNU Lesser General Public License v2 or later (LGPLv2+)": "LGPL-2.0-or-later",
    "GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0-only",
    "GNU Lesser General Public License v3 or later (LGPLv3+)": "LGPL-3.0-or-later",
    "GNU Affero General Public License v3": "AGPL-3.0-only",
    "The Unlicense (Unlicense)": "Unlicense", "zlib/libpng License": "Zlib",
    "Academic Free License (AFL)": "AFL-3.0", "Eclipse Public License 2.0 (EPL-2.0)": "EPL-2.0",
    "Boost Software License 1.0 (BSL-1.0)": "BSL-1.0",
    "Universal Permissive License (UPL)": "UPL-1.0",
}

_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_OPERATORS = {"AND", "OR", "WITH"}
_REF = re.compile(r"^(DocumentRef-[A-Za-z0-9.\-]+:)?LicenseRef-[A-Za-z0-9.\-]+$")
_SANITISE = re.compile(r"[^A-Za-z0-9.\-]+")


def spdx_id(name: str) -> str | None:
    """The SPDX licence id a single licence name stands for, if it is a known one."""
    text = name.strip()
    lowered = text.lower()
    alias = _ALIASES.get(lowered)  # first: Debian's "LGPL-2.1+" is SPDX's LGPL-2.1-or-later
    if alias is not None:
        return alias
    return text if text in LICENSE_IDS else _BY_LOWER.get(lowered)


def classifier_license(classifier: str) -> str | None:
    """`License :: OSI Approved :: MIT License` -> `MIT`."""
    parts = [p.strip() for p in classifier.split("::")]
    if len(parts) < 2 or parts[0] != "License":
        return None
    return _CLASSIFIERS.get(parts[-1])


def license_ref(name: str) -> str:
    """A `LicenseRef-` id for a licence SPDX does not list."""
    cleaned = _SANITISE.sub("-", name.strip()).strip("-") or "unknown"
    return f"LicenseRef-{cleaned[:64]}"


def is_expression(text: str) -> bool:
    """True if `text` is an SPDX expression whose every id is known (or a LicenseRef)."""
    tokens = _TOKEN.findall(text)
    if not tokens:
        return False
    expect_id = True
    depth = 0
    for tok in tokens:
        if tok == "(":
            if not expect_id:
                return False
            depth += 1
        elif tok == ")":
            depth -= 1
            if depth < 0 or expect_id:
                return False
        elif tok in _OPERATORS:
            if expect_id:
                return False
            expect_id = True
        else:
            if not expect_id:
                return False
            base = tok[:-1] if tok.endswith("+") else tok
            if base not in LICENSE_IDS and not _REF.match(tok) and not _is_exception(tok):
                return False
            expect_id = False
    return depth == 0 and not expect_id


def _is_exception(tok: str) -> bool:
    return tok in EXCEPTION_IDS


def to_expression(declared: str) -> tuple[str, bool]:
    """(SPDX expression, True) for a declared licence, or (LicenseRef-…, False) for text
    that names no known licence."""
    text = declared.strip()
    known = spdx_id(text)
    if known is not None:
        return known, True
    if is_expression(text):
        return text, True
    return license_ref(text), False
