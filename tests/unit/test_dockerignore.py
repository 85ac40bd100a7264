"""Unit tests for pybuild.context.patterns and pybuild.context.dockerignore.

The case tables are ported from moby/patternmatcher (patternmatcher_test.go:
TestMatches, TestMatch, TestCompile and the TestCleanPatterns* tests;
ignorefile/ignorefile_test.go: TestReadAll) and from Go's own
path/filepath match_test.go, which patternmatcher's TestMatch is based on.
"""

from __future__ import annotations

import random

import pytest

from pybuild.context.dockerignore import read_ignore_file
from pybuild.context.patterns import (
    DockerignoreError,
    PatternMatcher,
    _BadPatternError,
    _filepath_match,
    _Pattern,
)
from pybuild.errors import UserError
from pybuild.gocompat import clean_path

FAIL, EXACT, INEXACT = "fail", "exact", "inexact"

# patternmatcher_test.go TestMatches (the Linux variant).
MATCHES_TESTS: list[tuple[str, str, str]] = [
    ("**", "file", EXACT),
    ("**", "file/", EXACT),
    ("**/", "file", EXACT),  # weird one
    ("**/", "file/", EXACT),
    ("**", "/", EXACT),
    ("**/", "/", EXACT),
    ("**", "dir/file", EXACT),
    ("**/", "dir/file", EXACT),
    ("**", "dir/file/", EXACT),
    ("**/", "dir/file/", EXACT),
    ("**/**", "dir/file", EXACT),
    ("**/**", "dir/file/", EXACT),
    ("dir/**", "dir/file", EXACT),
    ("dir/**", "dir/file/", EXACT),
    ("dir/**", "dir/dir2/file", EXACT),
    ("dir/**", "dir/dir2/file/", EXACT),
    ("**/dir", "dir", EXACT),
    ("**/dir", "dir/file", INEXACT),
    ("**/dir2/*", "dir/dir2/file", EXACT),
    ("**/dir2/*", "dir/dir2/file/", INEXACT),
    ("**/dir2/**", "dir/dir2/dir3/file", EXACT),
    ("**/dir2/**", "dir/dir2/dir3/file/", EXACT),
    ("**file", "file", EXACT),
    ("**file", "dir/file", EXACT),
    ("**/file", "dir/file", EXACT),
    ("**file", "dir/dir/file", EXACT),
    ("**/file", "dir/dir/file", EXACT),
    ("**/file*", "dir/dir/file", EXACT),
    ("**/file*", "dir/dir/file.txt", EXACT),
    ("**/file*txt", "dir/dir/file.txt", EXACT),
    ("**/file*.txt", "dir/dir/file.txt", EXACT),
    ("**/file*.txt*", "dir/dir/file.txt", EXACT),
    ("**/**/*.txt", "dir/dir/file.txt", EXACT),
    ("**/**/*.txt2", "dir/dir/file.txt", FAIL),
    ("**/*.txt", "file.txt", EXACT),
    ("**/**/*.txt", "file.txt", EXACT),
    ("a**/*.txt", "a/file.txt", EXACT),
    ("a**/*.txt", "a/dir/file.txt", EXACT),
    ("a**/*.txt", "a/dir/dir/file.txt", EXACT),
    ("a/*.txt", "a/dir/file.txt", FAIL),
    ("a/*.txt", "a/file.txt", EXACT),
    ("a/*.txt**", "a/file.txt", EXACT),
    ("a[b-d]e", "ae", FAIL),
    ("a[b-d]e", "ace", EXACT),
    ("a[b-d]e", "aae", FAIL),
    ("a[^b-d]e", "aze", EXACT),
    (".*", ".foo", EXACT),
    (".*", "foo", FAIL),
    ("abc.def", "abcdef", FAIL),
    ("abc.def", "abc.def", EXACT),
    ("abc.def", "abcZdef", FAIL),
    ("abc?def", "abcZdef", EXACT),
    ("abc?def", "abcdef", FAIL),
    ("**/foo/bar", "foo/bar", EXACT),
    ("**/foo/bar", "dir/foo/bar", EXACT),
    ("**/foo/bar", "dir/dir2/foo/bar", EXACT),
    ("abc/**", "abc", FAIL),
    ("abc/**", "abc/def", EXACT),
    ("abc/**", "abc/def/ghi", EXACT),
    ("**/.foo", ".foo", EXACT),
    ("**/.foo", "bar.foo", FAIL),
    ("a(b)c/def", "a(b)c/def", EXACT),
    ("a(b)c/def", "a(b)c/xyz", FAIL),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", EXACT),
    (
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        EXACT,
    ),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", EXACT),
    ("a\\\\", "a\\", EXACT),
    ("a\\*b", "a*b", EXACT),
]

MULTI_PATTERN_TESTS: list[tuple[list[str], str, str]] = [
    (["**", "!util/docker/web"], "util/docker/web/foo", FAIL),
    (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", EXACT),
    (
        ["**", "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"],
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        FAIL,
    ),
    (["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", FAIL),
]

ALL_TESTS = [([p], text, kind) for p, text, kind in MATCHES_TESTS] + MULTI_PATTERN_TESTS


def _id(case: tuple[list[str], str, str]) -> str:
    patterns, text, kind = case
    return f"{','.join(patterns)}~{text}~{kind}"


@pytest.mark.parametrize("case", [([p], t, k) for p, t, k in MATCHES_TESTS], ids=_id)
def test_matches_exact(case: tuple[list[str], str, str]) -> None:
    patterns, text, kind = case
    assert PatternMatcher(patterns).matches_exact(text) == (kind == EXACT)


@pytest.mark.parametrize("case", ALL_TESTS, ids=_id)
def test_matches_or_parent_matches(case: tuple[list[str], str, str]) -> None:
    patterns, text, kind = case
    assert PatternMatcher(patterns).matches_or_parent_matches(text) == (kind != FAIL)


@pytest.mark.parametrize("case", ALL_TESTS, ids=_id)
def test_matches_using_parent_results(case: tuple[list[str], str, str]) -> None:
    # `matches` is MatchesUsingParentResults fed with its parent directories' results.
    patterns, text, kind = case
    assert PatternMatcher(patterns).matches(text) == (kind != FAIL)


@pytest.mark.parametrize("case", ALL_TESTS, ids=_id)
def test_matches_using_parent_results_no_context(case: tuple[list[str], str, str]) -> None:
    patterns, text, kind = case
    matched, _, _ = PatternMatcher(patterns)._match_info(text, ())
    assert matched == (kind != FAIL)


# patternmatcher_test.go matchTests (run through the deprecated Matches there).
MATCH_TESTS: list[tuple[str, str, bool, bool]] = [
    ("abc", "abc", True, False),
    ("*", "abc", True, False),
    ("*c", "abc", True, False),
    ("a*", "a", True, False),
    ("a*", "abc", True, False),
    ("a*", "ab/c", True, False),
    ("a*/b", "abc/b", True, False),
    ("a*/b", "a/c/b", False, False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True, False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True, False),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False, False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False, False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True, False),
    ("a*b?c*x", "abxbbxdbxebxczzy", False, False),
    ("ab[c]", "abc", True, False),
    ("ab[b-d]", "abc", True, False),
    ("ab[e-g]", "abc", False, False),
    ("ab[^c]", "abc", False, False),
    ("ab[^b-d]", "abc", False, False),
    ("ab[^e-g]", "abc", True, False),
    ("a\\*b", "a*b", True, False),
    ("a\\*b", "ab", False, False),
    ("a?b", "a☺b", True, False),
    ("a[^a]b", "a☺b", True, False),
    ("a???b", "a☺b", False, False),
    ("a[^a][^a][^a]b", "a☺b", False, False),
    ("[a-ζ]*", "α", True, False),
    ("*[a-ζ]", "A", False, False),
    ("a?b", "a/b", False, False),
    ("a*b", "a/b", False, False),
    ("[\\]a]", "]", True, False),
    ("[\\-]", "-", True, False),
    ("[x\\-]", "x", True, False),
    ("[x\\-]", "-", True, False),
    ("[x\\-]", "z", False, False),
    ("[\\-x]", "x", True, False),
    ("[\\-x]", "-", True, False),
    ("[\\-x]", "a", False, False),
    ("[]a]", "]", False, True),
    ("[-]", "-", False, True),
    ("[x-]", "x", False, True),
    ("[x-]", "-", False, True),
    ("[x-]", "z", False, True),
    ("[-x]", "x", False, True),
    ("[-x]", "-", False, True),
    ("[-x]", "a", False, True),
    ("\\", "a", False, True),
    ("[a-b-c]", "a", False, True),
    ("[", "a", False, True),
    ("[^", "a", False, True),
    ("[^bc", "a", False, True),
    ("a[", "a", False, True),
    ("a[", "ab", False, True),
    ("*x", "xxx", True, False),
]


@pytest.mark.parametrize(("pattern", "text", "match", "error"), MATCH_TESTS)
def test_match(pattern: str, text: str, match: bool, error: bool) -> None:
    if error:
        with pytest.raises(DockerignoreError, match="syntax error in pattern"):
            PatternMatcher([pattern])
        return
    matcher = PatternMatcher([pattern])
    assert matcher.matches(text) == match
    assert matcher.matches_or_parent_matches(text) == match


# Go's path/filepath match_test.go: the validator patternmatcher calls.
FILEPATH_MATCH_TESTS = [
    (p, t, False if (p, t) == ("a*", "ab/c") else m, e) for p, t, m, e in MATCH_TESTS
] + [("a[", "x", False, True), ("a/b[", "x", False, True)]


@pytest.mark.parametrize(("pattern", "text", "match", "error"), FILEPATH_MATCH_TESTS)
def test_filepath_match(pattern: str, text: str, match: bool, error: bool) -> None:
    if error:
        with pytest.raises(_BadPatternError):
            _filepath_match(pattern, text)
    else:
        assert _filepath_match(pattern, text) == match


# patternmatcher_test.go compileTests (the "/" separator variant).
COMPILE_TESTS: list[tuple[str, str, str | None]] = [
    ("*", "regexp", "^[^/]*$"),
    ("file*", "regexp", "^file[^/]*$"),
    ("*file", "regexp", "^[^/]*file$"),
    ("a*/b", "regexp", "^a[^/]*/b$"),
    ("**", "suffix", None),
    ("**/**", "regexp", "^(.*/)?.*$"),
    ("dir/**", "prefix", None),
    ("**/dir", "suffix", None),
    ("**/dir2/*", "regexp", "^(.*/)?dir2/[^/]*$"),
    ("**/dir2/**", "regexp", "^(.*/)?dir2/.*$"),
    ("**file", "suffix", None),
    ("**/file*txt", "regexp", "^(.*/)?file[^/]*txt$"),
    ("**/**/*.txt", "regexp", "^(.*/)?(.*/)?[^/]*\\.txt$"),
    ("a[b-d]e", "regexp", "^a[b-d]e$"),
    (".*", "regexp", "^\\.[^/]*$"),
    ("abc.def", "exact", None),
    ("abc?def", "regexp", "^abc[^/]def$"),
    ("**/foo/bar", "suffix", None),
    ("a(b)c/def", "exact", None),
    ("a.|)$(}+{bc", "exact", None),
    ("dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", "exact", None),
]


@pytest.mark.parametrize(("pattern", "match_type", "regexp"), COMPILE_TESTS)
def test_compile(pattern: str, match_type: str, regexp: str | None) -> None:
    compiled = _Pattern(clean_path(pattern))
    assert compiled.match_type == match_type
    if regexp is not None:
        assert compiled.regexp == regexp


# -- matcher construction (TestCleanPatterns* and friends) ------------------------------


def test_clean_patterns() -> None:
    assert PatternMatcher(["docs", "config"]).patterns == ["docs", "config"]


def test_clean_patterns_strip_empty_patterns() -> None:
    assert PatternMatcher(["docs", "config", "", "   "]).patterns == ["docs", "config"]


@pytest.mark.parametrize("patterns", [["docs", "!docs/README.md"], ["docs", "  !docs/README.md"]])
def test_clean_patterns_exception_flag(patterns: list[str]) -> None:
    assert PatternMatcher(patterns).exclusions


def test_clean_patterns_trailing_space_trimmed() -> None:
    matcher = PatternMatcher(["docs", "!docs/README.md  "])
    assert matcher.exclusions
    assert matcher.patterns == ["docs", "!docs/README.md"]


def test_no_exclusions() -> None:
    assert not PatternMatcher(["docs"]).exclusions


def test_single_exclamation_is_an_error() -> None:
    with pytest.raises(DockerignoreError, match='illegal exclusion pattern: "!"'):
        PatternMatcher(["!"])


def test_errors_are_user_errors() -> None:
    assert issubclass(DockerignoreError, UserError)


def test_matches_with_no_patterns() -> None:
    assert not PatternMatcher([]).matches("/any/path/there")


def test_malformed_pattern_is_rejected_up_front() -> None:
    with pytest.raises(DockerignoreError):
        PatternMatcher(["["])


def test_regex_that_fails_to_compile_errors_on_every_match() -> None:
    # filepath.Match accepts the inverted range l-O; the regexp compiler does not
    # (regression test for moby/moby#52203 in patternmatcher_test.go).
    matcher = PatternMatcher(["[Local-Only]/"])
    for _ in range(2):
        with pytest.raises(DockerignoreError, match="syntax error in pattern"):
            matcher.matches_or_parent_matches("x")
        with pytest.raises(DockerignoreError):
            matcher.matches("x")


def test_bad_exception_pattern_is_not_evaluated_until_needed() -> None:
    # Upstream skips exception patterns while nothing is excluded, so no error here.
    matcher = PatternMatcher(["a", "![z-a]"])
    assert not matcher.matches("b")
    with pytest.raises(DockerignoreError):
        matcher.matches("a")


# -- simple-pattern semantics ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        (["fileutils.go"], "fileutils.go", True),
        (["*"], "fileutils.go", True),
        (["*.go"], "fileutils.go", True),
        (["!fileutils.go", "*.go"], "fileutils.go", True),
        (["*.go", "!fileutils.go"], "fileutils.go", False),
        (["docs", "!docs/README.md"], "docs/README.md", False),
        (["docs/", "!docs/README.md"], "docs/README.md", False),
        (["docs/*", "!docs/README.md"], "docs/README.md", False),
        (["docs", "!docs/README.md"], "docs/other.md", True),
        # BEHAVIOURS.md: the last matching pattern wins.
        (["ba*", "!bay"], "bay", False),
        (["ba*", "!bay"], "bar", True),
        (["!bay", "ba*"], "bay", True),
        # A pattern matching a directory excludes everything below it.
        (["node_modules"], "node_modules/a/b/c.js", True),
        (["*/tmp"], "src/tmp/x/y", True),
        (["*.md"], "docs/x.md", False),  # `*` does not cross `/`
        (["**/*.md"], "docs/x.md", True),
        (["/abs/path"], "abs/path", False),  # leading `/` is removed by read_ignore_file only
        (["./a/../b"], "b", True),
        (["a\\d"], "a1", True),  # Go's regexp reads `\d` as a digit class
        (["a\\d"], "ad", False),
    ],
)
def test_semantics(patterns: list[str], path: str, excluded: bool) -> None:
    assert PatternMatcher(patterns).matches(path) == excluded


def test_walker_semantics_differ_from_matches_or_parent_matches() -> None:
    # The walker's MatchesUsingParentResults does not re-apply "d" to d/f after the
    # exception, while MatchesOrParentMatches does.
    matcher = PatternMatcher(["d", "!d/f", "d"])
    assert not matcher.matches("d/f")
    assert matcher.matches_or_parent_matches("d/f")
    assert matcher.matches("d/g")


def test_exclusions_under_excluded_dir_can_reinclude() -> None:
    matcher = PatternMatcher(["**", "!src", "src/*.tmp", "!src/keep.tmp"])
    assert matcher.matches("README.md")
    assert not matcher.matches("src")
    assert not matcher.matches("src/main.py")
    assert matcher.matches("src/a.tmp")
    assert not matcher.matches("src/keep.tmp")
    assert not matcher.matches("src/sub/a.tmp")


def test_excluded_by() -> None:
    matcher = PatternMatcher(["*.log", "node_modules", "!keep.log", "build/**"])
    assert matcher.excluded_by("x.log") == "*.log"
    assert matcher.excluded_by("keep.log") is None
    assert matcher.excluded_by("node_modules/a/b") == "node_modules"
    assert matcher.excluded_by("build/out/x") == "build/**"
    assert matcher.excluded_by("src/main.py") is None


def test_query_order_does_not_matter() -> None:
    patterns = ["a", "!a/b", "a/b/c", "**/*.x", "!**/keep.x"]
    paths = ["a/b/c/d", "a/b", "a/b/e", "q/keep.x", "q/w.x", "a", "a/keep.x", "z/a/b"]
    expected = {p: PatternMatcher(patterns).matches(p) for p in paths}
    shared = PatternMatcher(patterns)
    for path in reversed(paths):
        assert shared.matches(path) == expected[path], path


def test_fast_path_agrees_with_upstream_loop() -> None:
    rng = random.Random(7)
    pattern_pool = ["a", "b/*", "**/c", "!a/b", "a/**", "!**/d", "*.x", "!k.x", "e?", "[ab]/z"]
    names = ["a", "b", "c", "d", "e1", "k.x", "y.x", "z"]
    for _ in range(200):
        patterns = rng.sample(pattern_pool, rng.randint(1, 6))
        matcher = PatternMatcher(patterns)
        for _ in range(20):
            path = "/".join(rng.choice(names) for _ in range(rng.randint(1, 4)))
            parent = matcher._parent_state(path)[0]
            assert matcher.matches(path) == matcher._match_info(path, parent)[0], (
                patterns,
                path,
            )


# -- fsutil pruning ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "directory", "skip"),
    [
        (["node_modules"], "node_modules", True),
        (["node_modules"], "src", False),  # not excluded at all
        (["node_modules", "!node_modules/keep"], "node_modules", False),
        (["node_modules", "!other/keep"], "node_modules", True),
        (["node_modules", "!node_modules/keep/**"], "node_modules", False),
        (["node_modules", "!**/keep"], "node_modules", False),  # wildcard exception
        (["a", "!a/b/*"], "a", False),
        (["a", "!ab"], "a", True),
    ],
)
def test_can_skip_dir(patterns: list[str], directory: str, skip: bool) -> None:
    assert PatternMatcher(patterns).can_skip_dir(directory) == skip


# -- read_ignore_file (ignorefile.ReadAll) -------------------------------------------------


def test_read_all() -> None:
    content = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n"
    assert read_ignore_file(content) == [
        "test1",
        "test2",
        "a/file/here",
        "lastfile",
        "!inverted/abs/path",
    ]


def test_read_empty() -> None:
    assert read_ignore_file("") == []
    assert read_ignore_file("\n\n# only comments\n") == []


@pytest.mark.parametrize("content", ["!\n", "a\n! \n", "!"])
def test_read_lone_exclamation_is_an_error(content: str) -> None:
    with pytest.raises(DockerignoreError, match='illegal exclusion pattern: "!"'):
        read_ignore_file(content)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("\ufeffa\nb", ["a", "b"]),  # BOM dropped on the first line
        ("a\n\ufeffb", ["a", "\ufeffb"]),  # ... only there
        ("\ufeff#c\nb", ["b"]),
        ("a\r\nb\r\n", ["a", "b"]),
        ("  # not a comment\n", ["# not a comment"]),
        ("#comment\n  x  \n", ["x"]),
        ("a/./b/../c//d/\n", ["a/c/d"]),
        ("/\n", ["/"]),
        ("//a\n", ["a"]),
        ("../a\n", ["../a"]),
        ("!  /x/../y\n", ["!y"]),
        ("\t*.log\u00a0\n", ["*.log"]),
        ("a\x1c\n", ["a\x1c"]),  # Go's TrimSpace does not strip U+001C
    ],
)
def test_read_rules(content: str, expected: list[str]) -> None:
    assert read_ignore_file(content) == expected


def test_read_then_match() -> None:
    patterns = read_ignore_file("# ignore\n*.pyc\n/build\n!build/keep\n**/__pycache__\n")
    matcher = PatternMatcher(patterns)
    assert matcher.matches("a.pyc")
    assert not matcher.matches("src/a.pyc")
    assert matcher.matches("build/x")
    assert not matcher.matches("build/keep")
    assert matcher.matches("src/pkg/__pycache__/m.cpython-311.pyc")


# -- performance -----------------------------------------------------------------------------


def _tree(count: int) -> list[str]:
    rng = random.Random(1)
    dirs = ["src", "src/pkg", "node_modules/lib/dist", "docs", "build/out", ".git/objects", "t"]
    exts = [".py", ".js", ".log", ".md", ".txt", ".o", ""]
    paths = []
    for i in range(count):
        base = rng.choice(dirs)
        for _ in range(rng.randint(0, 2)):
            base += f"/d{rng.randint(0, 30)}"
        paths.append(f"{base}/f{i}{rng.choice(exts)}")
    return paths


PLAIN_PATTERNS = [
    "node_modules",
    ".git",
    "**/*.log",
    "*.md",
    "build/**",
    "docs/*.txt",
    "**/x",
    "*.o",
    "tmp",
    "dist/**",
]
PATTERNS_WITH_EXCEPTIONS = [
    "node_modules",
    ".git",
    "**/*.log",
    "*.md",
    "build/**",
    "!build/out/keep",
    "**/__pycache__",
    "!**/important.log",
    "tmp",
    "!README.md",
]


@pytest.mark.parametrize(
    "patterns", [PLAIN_PATTERNS, PATTERNS_WITH_EXCEPTIONS], ids=["plain", "with-exceptions"]
)
def test_directory_result_cache_agrees_with_fresh_matchers(patterns: list[str]) -> None:
    # The matcher caches per-directory results for speed (timed in bench/, not here);
    # answers on a big tree must not depend on what was asked before.
    paths = _tree(20_000)
    warm = PatternMatcher(patterns)
    warm_answers = [warm.matches(p) for p in paths]
    sample = paths[::97]
    fresh_answers = [PatternMatcher(patterns).matches(p) for p in sample]
    assert fresh_answers == warm_answers[::97]
    assert any(warm_answers) and not all(warm_answers)
