"""Secrets never reach a record: by name (BuildKit's SecretsUsedInArgOrEnv words) and by
value (masked wherever they appear, also split across log chunks)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from pybuild.history.redact import (
    MASK,
    Redactor,
    StreamScrubber,
    looks_secret,
    read_secret_values,
    split_build_args,
)


def test_secret_looking_names_follow_buildkit_rule() -> None:
    # The examples of validations.go's comment, and its allow words.
    for name in ("api_key", "DATABASE_PASSWORD", "GITHUB_TOKEN", "secret_MESSAGE", "AUTH",
                 "apikey", "aws_credentials", "PWORD", "my_passwd"):
        assert looks_secret(name), name
    for name in ("GPG_PUBLIC_KEY", "KEY_FILE", "TOKEN_VERSION", "MONKEY", "TOKENIZER",
                 "VERSION", "PATH", "http_proxy"):
        assert not looks_secret(name), name


def test_split_build_args_drops_named_and_secret_looking() -> None:
    kept, dropped, values = split_build_args(
        [("FOO", "1"), ("GITHUB_TOKEN", "ghp_abc"), ("MYVAL", "v4lue")], ["MYVAL"])
    assert kept == (("FOO", "1"),)
    assert dropped == ("GITHUB_TOKEN", "MYVAL")
    assert values == ("ghp_abc", "v4lue")


def test_redactor_masks_values_lines_and_url_passwords() -> None:
    r = Redactor(["s3cr3t-value\n", "line-one\nline-two", "ab"])
    assert r("x s3cr3t-value y") == f"x {MASK} y"
    assert r("line-two alone") == f"{MASK} alone"
    assert r("ab stays: too short to mask") == "ab stays: too short to mask"
    assert r("git clone https://bob:hunter22@example.com/r.git") == \
        f"git clone https://{MASK}@example.com/r.git"


@given(st.text(alphabet="abcXYZ-\n", max_size=60), st.lists(st.integers(0, 80), max_size=6))
def test_stream_scrubber_masks_a_secret_split_anywhere(noise: str, cuts: list[int]) -> None:
    secret = "XYZ-secret-ZYX"
    text = noise + secret + noise + secret[:5] + "|" + secret
    r = Redactor([secret])
    s = StreamScrubber(r)
    pieces, last = [], 0
    for c in sorted(min(c, len(text)) for c in cuts):
        pieces.append(text[last:c])
        last = c
    pieces.append(text[last:])
    out = "".join(s.feed(p) for p in pieces) + s.flush()
    assert secret not in out
    assert out == r(text)


def test_read_secret_values_from_files_and_env(tmp_path: Path) -> None:
    f = tmp_path / "tok"
    f.write_text("file-secret\n")
    values = read_secret_values([("a", "file", str(f)), ("b", "env", "SECRET_VAR"),
                                 ("c", "file", str(tmp_path / "missing"))],
                                {"SECRET_VAR": "env-secret"})
    assert values == ("file-secret\n", "env-secret")
