"""Conformance: shell-word expansion against BuildKit's own test data.

Data: shared/conformance/shell-lex/ (envVarTest, wordsTest, lex-cases.json),
copied from moby/buildkit frontend/dockerfile/shell. Every case is a separate
test; a missing data directory fails the run instead of skipping it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pybuild.frontend.shell.lex import ExpansionError, ShellLex

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "shell-lex"

# Environment every envVarTest line runs with (upstream TestShellParser4EnvVars).
ENV_VAR_TEST_ENV = ["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]


@dataclass(frozen=True)
class EnvVarCase:
    line: int
    source: str
    expected: str  # "error" means processing must fail


@dataclass(frozen=True)
class WordsCase:
    line: int
    source: str
    env: tuple[str, ...]
    expected: tuple[str, ...]  # ("error",) means processing must fail


def _read(name: str) -> str:
    path = DATA_DIR / name
    if not path.is_file():
        # Collected as a failing case: the data must be there.
        return ""
    return path.read_text(encoding="utf-8")


def _env_var_cases() -> list[EnvVarCase]:
    cases = []
    for lineno, line in enumerate(_read("envVarTest").split("\n"), start=1):
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        fields = line.split("|")
        assert len(fields) == 3, f"envVarTest:{lineno}: expected 3 fields"
        platform, source, expected = (f.strip() for f in fields)
        assert platform in ("A", "U", "W"), f"envVarTest:{lineno}: bad platform {platform}"
        if platform == "W":
            continue  # Windows-only: case-insensitive names
        cases.append(EnvVarCase(lineno, source, expected))
    return cases


def _words_cases() -> list[WordsCase]:
    cases = []
    env: list[str] = []
    for lineno, line in enumerate(_read("wordsTest").split("\n"), start=1):
        if line.startswith("#"):
            continue
        if line.startswith("ENV "):
            env.append(line[3:].lstrip(" "))
            continue
        if not line:
            continue  # only the file's final newline produces this
        fields = line.split("|")
        assert len(fields) == 2, f"wordsTest:{lineno}: expected exactly one |"
        expected = tuple(fields[1].lstrip(" ").split(","))
        cases.append(WordsCase(lineno, fields[0].strip(), tuple(env), expected))
    return cases


def _json_cases(section: str) -> list[dict[str, Any]]:
    text = _read("lex-cases.json")
    if not text:
        return []
    cases: list[dict[str, Any]] = json.loads(text)[section]
    return cases


ENV_VAR_CASES = _env_var_cases()
WORDS_CASES = _words_cases()
MATCH_CASES = _json_cases("process_word_with_matches")
MANDATORY_CASES = _json_cases("mandatory_env_vars")
PLATFORM_CASES = _json_cases("platform_release_name")


def test_data_present() -> None:
    for name in ("envVarTest", "wordsTest", "lex-cases.json"):
        assert (DATA_DIR / name).is_file(), f"conformance data missing: {DATA_DIR / name}"
    # Upstream counts (A+U lines of envVarTest; W lines are Windows-only).
    assert len(ENV_VAR_CASES) == 228
    assert len(WORDS_CASES) == 24
    assert (len(MATCH_CASES), len(MANDATORY_CASES), len(PLATFORM_CASES)) == (47, 6, 3)


@pytest.mark.parametrize("case", ENV_VAR_CASES, ids=lambda c: f"L{c.line}:{c.source}")
def test_env_var(case: EnvVarCase) -> None:
    lex = ShellLex("\\")
    if case.expected == "error":
        with pytest.raises(ExpansionError):
            lex.process_word(case.source, ENV_VAR_TEST_ENV)
        return
    assert lex.process_word(case.source, ENV_VAR_TEST_ENV) == case.expected
    # Upstream also runs every line through the map-based entry point.
    env_map = dict(item.split("=", 1) for item in ENV_VAR_TEST_ENV)
    assert lex.process_word(case.source, env_map) == case.expected


@pytest.mark.parametrize("case", WORDS_CASES, ids=lambda c: f"L{c.line}:{c.source}")
def test_words(case: WordsCase) -> None:
    lex = ShellLex("\\")
    try:
        result = lex.process_words(case.source, list(case.env))
    except ExpansionError:
        result = ["error"]
    assert tuple(result) == case.expected


@pytest.mark.parametrize("case", MATCH_CASES, ids=lambda c: c["input"])
def test_process_word_with_matches(case: dict[str, Any]) -> None:
    lex = ShellLex("\\")
    if case.get("expect_error"):
        with pytest.raises(ExpansionError):
            lex.process_word_with_matches(case["input"], case["envs"])
        return
    result, matched, unmatched = lex.process_word_with_matches(case["input"], case["envs"])
    assert result == case["expected"]
    assert matched == set(case["matches"])
    assert unmatched == set(case["unmatched"])


@pytest.mark.parametrize("case", MANDATORY_CASES, ids=lambda c: f"{c['input']}-{c['envs']}")
def test_mandatory_env_vars(case: dict[str, Any]) -> None:
    lex = ShellLex("\\")
    if case.get("expect_error"):
        with pytest.raises(ExpansionError) as info:
            lex.process_word(case["input"], case["envs"])
        assert case["error_contains"] in str(info.value)
        return
    assert lex.process_word(case["input"], case["envs"]) == case["expected"]


@pytest.mark.parametrize("case", PLATFORM_CASES, ids=lambda c: c["expected"])
def test_platform_release_name(case: dict[str, Any]) -> None:
    result, _, _ = ShellLex("\\").process_word_with_matches(case["input"], case["envs"])
    assert result == case["expected"]
