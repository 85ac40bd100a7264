"""Registry configuration without a network: retry policy and Retry-After, registries.conf,
mirror endpoints, auth files and their helpers' selection, login targets, certs.d lookup,
imagetools' sources and annotations."""

from __future__ import annotations

import base64
import email.utils
import json
import random
import ssl
from pathlib import Path

import httpx
import pytest

from pybuild.errors import UserError
from pybuild.oci.reference import Reference
from pybuild.registry.auth import Credentials, credentials_from_auth_data
from pybuild.registry.authfiles import (
    configured_helper,
    erase_credentials,
    lookup_credentials,
    server_key,
    store_credentials,
)
from pybuild.registry.endpoints import Endpoint, RegistryMirror, pull_endpoints, push_endpoint
from pybuild.registry.imagetools import Annotation, Source, complete_sources, encode_index
from pybuild.registry.locations import (
    AuthLocations,
    auth_locations,
    default_certs_dirs,
    registries_conf_locations,
)
from pybuild.registry.login import LoginTarget
from pybuild.registry.options import RegistriesConfFiles, RegistryOptions, RetryPolicy
from pybuild.registry.pull import endpoint_options
from pybuild.registry.registries_conf import (
    RegistriesConfError,
    load_registries_conf,
    match_prefix,
    parse_registries_conf,
)
from pybuild.registry.retry import (
    describe_transport_error,
    gave_up,
    is_transient,
    parse_retry_after,
)
from pybuild.registry.tlsconfig import host_certs_dir, make_ssl_context

# --- retries ---------------------------------------------------------------------------------


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    for junk in ("", "soon", "-1", "1.5e3x"):
        assert parse_retry_after(junk) is None


def test_backoff_is_capped_jittered_and_retry_after_wins() -> None:
    policy = RetryPolicy(attempts=6, base_delay=0.5, max_delay=4.0)
    rng = random.Random(1)
    for failures, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)):
        for _ in range(20):
            d = policy.delay(failures, rng=rng)
            assert ceiling / 2 <= d <= ceiling
    assert policy.delay(1, retry_after=12.0) == 12.0


def test_transient_faults_are_told_apart() -> None:
    req = httpx.Request("GET", "http://r/v2/")
    reset = httpx.ReadError("", request=req)
    reset.__cause__ = ConnectionResetError(104, "Connection reset by peer")
    assert is_transient(reset)
    assert describe_transport_error(reset, 120) == "the connection was reset by the peer"
    assert is_transient(httpx.ReadTimeout("", request=req))
    assert describe_transport_error(httpx.ReadTimeout("", request=req), 120) == \
        "timed out: no data for 120 s"
    assert is_transient(httpx.RemoteProtocolError("peer closed", request=req))
    refused = httpx.ConnectError("", request=req)
    refused.__cause__ = ConnectionRefusedError(111, "refused")
    assert not is_transient(refused)
    tls = httpx.ConnectError("", request=req)
    tls.__cause__ = ssl.SSLCertVerificationError("bad cert")
    assert not is_transient(tls)
    assert describe_transport_error(httpx.ReadError("", request=req), 5)  # never empty
    assert gave_up(1) == "" and gave_up(3) == " (gave up after 3 attempts)"


# --- registries.conf ---------------------------------------------------------------------


def test_registries_conf_v2_with_mirrors() -> None:
    [entry] = parse_registries_conf('''
unqualified-search-registries = ["docker.io"]
short-name-mode = "enforcing"
[[registry]]
prefix = "docker.io"
location = "registry-1.docker.io"
mirror-by-digest-only = false
[[registry.mirror]]
location = "mirror.example.com:5000/hub"
insecure = true
[[registry.mirror]]
location = "second.example.com"
pull-from-mirror = "digest-only"
[aliases]
"x" = "docker.io/library/x"
''', "test.conf")
    assert entry.prefix == "docker.io" and entry.location == "registry-1.docker.io"
    assert [(m.location, m.insecure, m.pull_from_mirror) for m in entry.mirrors] == [
        ("mirror.example.com:5000/hub", True, "all"), ("second.example.com", False,
                                                        "digest-only")]
    assert entry.origin == "test.conf"


@pytest.mark.parametrize("text, message", [
    ('[[registry]]\nlocation = "a.io"\ninsecur = true\n', "did you mean 'insecure'"),
    ('unqualified-search-registry = ["a"]\n', "did you mean 'unqualified-search-registries'"),
    ('[[registry]]\nlocation = "https://a.io"\n', "URI schemes are not supported"),
    ('[[registry]]\nprefix = "a.io"\n', "location is unset"),
    ('[[registry]]\nlocation = "a.io"\ninsecure = "yes"\n', "must be true or false"),
    ('[[registry]]\nlocation = "a.io"\n[[registry.mirror]]\nlocation = "m"\n'
     'pull-from-mirror = "sometimes"\n', "unsupported pull-from-mirror"),
    ('[[registry]]\nlocation = "a.io"\nmirror-by-digest-only = true\n[[registry.mirror]]\n'
     'location = "m"\npull-from-mirror = "all"\n', "cannot be set when"),
    ('[[registry]\n', "not valid TOML"),
])
def test_registries_conf_errors_name_the_file(text: str, message: str) -> None:
    with pytest.raises(RegistriesConfError, match=message) as err:
        parse_registries_conf(text, "/etc/containers/registries.conf")
    assert "/etc/containers/registries.conf" in str(err.value)


def test_registries_conf_v1_and_drop_ins(tmp_path: Path) -> None:
    main = tmp_path / "registries.conf"
    main.write_text('[registries.insecure]\nregistries = ["old.io"]\n'
                    '[registries.block]\nregistries = ["bad.io"]\n')
    dropins = tmp_path / "registries.conf.d"
    dropins.mkdir()
    (dropins / "50-mirror.conf").write_text(
        '[[registry]]\nlocation = "old.io"\ninsecure = true\n'
        '[[registry.mirror]]\nlocation = "m.io"\n')
    (dropins / "ignored.txt").write_text("not toml at all [")
    config = load_registries_conf(main, (dropins, tmp_path / "missing"))
    found = config.find("old.io/x/y:1")
    assert found is not None and found[0].insecure and found[0].mirrors
    bad = config.find("bad.io/x")
    assert bad is not None and bad[0].blocked
    assert str(main) in config.sources
    assert load_registries_conf(tmp_path / "none.conf").registries == ()
    # conflicting flags for one registry are an error
    (dropins / "60-conflict.conf").write_text(
        '[[registry]]\nprefix = "old.io/team"\nlocation = "old.io"\n')
    with pytest.raises(RegistriesConfError, match="conflicting 'insecure'"):
        load_registries_conf(main, (dropins,))


def test_prefix_matching_as_containers_image() -> None:
    assert match_prefix("example.com/a/b:1", "example.com/a") == len("example.com/a")
    assert match_prefix("example.com/ab", "example.com/a") == -1
    assert match_prefix("example.com", "example.com") == len("example.com")
    assert match_prefix("a.example.com/x", "*.example.com") == len("a.example.com")
    assert match_prefix("example.com/x", "*.example.com") == -1
    assert match_prefix("x.io/a.example.com/y", "*.example.com") == -1


# --- endpoints ---------------------------------------------------------------------------------


def _config(text: str) -> object:
    from pybuild.registry.registries_conf import RegistriesConfig

    return RegistriesConfig(registries=tuple(parse_registries_conf(text, "r.conf")))


def test_pull_endpoints_order_and_rules() -> None:
    config = _config('''
[[registry]]
prefix = "docker.io/library"
location = "origin.io/lib"
insecure = true
[[registry.mirror]]
location = "tags.io/hub"
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "digests.io"
pull-from-mirror = "digest-only"
''')
    flag = RegistryMirror.parse("http://flag.io:5000")
    tag = Reference.parse("busybox:1")
    eps = pull_endpoints(tag, config, (flag,))  # type: ignore[arg-type]
    assert [str(e.reference) for e in eps] == [
        "flag.io:5000/library/busybox:1", "tags.io/hub/busybox:1", "origin.io/lib/busybox:1"]
    assert [e.mirror for e in eps] == [True, True, False]
    assert eps[0].insecure and eps[-1].insecure and not eps[1].insecure
    digest = Reference.parse("busybox@sha256:" + "a" * 64)
    eps = pull_endpoints(digest, config)  # type: ignore[arg-type]
    assert [e.reference.domain for e in eps] == ["digests.io", "origin.io"]
    other = Reference.parse("quay.io/x/y:1")
    assert pull_endpoints(other, config) == [Endpoint(reference=other)]  # type: ignore[arg-type]
    assert push_endpoint(tag, config).reference == tag  # type: ignore[arg-type]


def test_blocked_registries() -> None:
    config = _config('[[registry]]\nlocation = "bad.io"\nblocked = true\n')
    for call in (pull_endpoints, push_endpoint):
        with pytest.raises(UserError, match=r"registry bad\.io is blocked in r\.conf"):
            call(Reference.parse("bad.io/x:1"), config)  # type: ignore[operator]


def test_registry_mirror_flag_parsing() -> None:
    assert RegistryMirror.parse("mirror.gcr.io") == RegistryMirror(registry="docker.io",
                                                                  location="mirror.gcr.io")
    assert RegistryMirror.parse("ghcr.io=https://m.io/ghcr/") == RegistryMirror(
        registry="ghcr.io", location="m.io/ghcr")
    assert RegistryMirror.parse("http://m:5000").insecure
    for bad in ("=m.io", "docker.io=", "a b"):
        with pytest.raises(UserError, match="invalid --registry-mirror"):
            RegistryMirror.parse(bad)


def test_explicit_creds_never_go_to_a_mirror_elsewhere() -> None:
    ref = Reference.parse("origin.io/x:1")
    opts = RegistryOptions(creds="u:p")
    mirror = Endpoint(reference=Reference.parse("mirror.io/x:1"), mirror=True, insecure=True)
    assert endpoint_options(opts, ref, mirror).creds is None
    assert endpoint_options(opts, ref, mirror).insecure
    assert endpoint_options(opts, ref, Endpoint(reference=ref)).creds == "u:p"


def test_registries_conf_files_are_parsed_on_use(tmp_path: Path) -> None:
    path = tmp_path / "r.conf"
    path.write_text("this is not toml [")
    files = RegistriesConfFiles(main=path)
    options = RegistryOptions(registries=files)  # making options reads nothing
    with pytest.raises(RegistriesConfError):
        pull_endpoints(Reference.parse("a.io/b:1"), options.registries)


# --- auth files, helpers, login targets ------------------------------------------------------


def test_auth_entries_with_identity_tokens() -> None:
    data = {"auths": {"r.io": {"auth": base64.b64encode(b"me:").decode(),
                               "identitytoken": "rt-1"},
                      "t.io": {"identitytoken": "rt-2"}}}
    creds = credentials_from_auth_data(data, "r.io")
    assert creds == Credentials("me", "", "rt-1")
    assert "rt-1" not in repr(creds)
    assert credentials_from_auth_data(data, "t.io") == Credentials("", "", "rt-2")


def test_helper_selection_follows_docker(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    data = {"credsStore": "desktop", "credHelpers": {"gcr.io": "gcloud",
                                                     "https://index.docker.io/v1/": "hub"}}
    assert configured_helper(data, "gcr.io", path, None).name == "gcloud"  # type: ignore[union-attr]
    assert configured_helper(data, "docker.io", path, None).name == "hub"  # type: ignore[union-attr]
    other = configured_helper(data, "quay.io", path, None)
    assert other is not None and other.name == "desktop" and str(path) in other.origin
    assert configured_helper({}, "quay.io", path, None) is None
    assert server_key("docker.io") == "https://index.docker.io/v1/"
    assert server_key("127.0.0.1:5000") == "127.0.0.1:5000"


def test_store_and_erase_keep_the_rest_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    old = {"https://r.io/v1/": {"auth": "b2xkOg=="}}  # docker's legacy URL key, replaced
    path.write_text(json.dumps({"psFormat": "x", "auths": old}))
    locations = AuthLocations(read=(path,), write=path)
    stored = store_credentials("r.io", Credentials("u", "p"), locations)
    assert stored.path == path and not stored.helper
    data = json.loads(path.read_text())
    assert data["psFormat"] == "x"
    assert data["auths"] == {"r.io": {"auth": base64.b64encode(b"u:p").decode()}}
    assert lookup_credentials("r.io", "x/y", locations) == Credentials("u", "p")
    store_credentials("r.io", Credentials("u", "", "rt-9"), locations, repository="team")
    assert json.loads(path.read_text())["auths"]["r.io/team"] == {
        "auth": base64.b64encode(b"u:").decode(), "identitytoken": "rt-9"}
    assert erase_credentials("r.io", locations) == [str(path)]
    assert "r.io" not in json.loads(path.read_text())["auths"]
    assert erase_credentials("r.io", locations) == []


def test_where_a_login_is_written(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": "/bin"}
    docker = tmp_path / ".docker" / "config.json"
    podman = tmp_path / ".config" / "containers" / "auth.json"
    assert auth_locations(env).write == docker  # nothing yet: docker's file
    podman.parent.mkdir(parents=True)
    podman.write_text("{}")
    assert auth_locations(env).write == podman  # podman's file is the one in use
    docker.parent.mkdir()
    docker.write_text("{}")
    assert auth_locations(env).write == docker
    assert auth_locations(dict(env, REGISTRY_AUTH_FILE="/x/a.json")).write == Path("/x/a.json")
    explicit = auth_locations(env, tmp_path / "mine.json")
    assert explicit.read == (tmp_path / "mine.json",) and explicit.search_path == "/bin"


def test_login_targets() -> None:
    assert LoginTarget.parse("") == LoginTarget(domain="docker.io")
    assert LoginTarget.parse("https://index.docker.io/v1/") == LoginTarget(domain="docker.io")
    assert LoginTarget.parse("localhost:5000") == LoginTarget(domain="localhost:5000")
    assert LoginTarget.parse("quay.io/team") == LoginTarget(domain="quay.io", repository="team")
    with pytest.raises(UserError, match="invalid registry"):
        LoginTarget.parse("bad host")


# --- locations and certs.d ---------------------------------------------------------------------


def test_locations_from_the_environment(tmp_path: Path) -> None:
    assert default_certs_dirs({"HOME": "/h"}) == (
        Path("/h/.config/containers/certs.d"), Path("/etc/containers/certs.d"),
        Path("/etc/docker/certs.d"))
    assert default_certs_dirs({"PYBUILD_CERTS_DIRS": "/a::/b"}) == (Path("/a"), Path("/b"))
    main, dirs = registries_conf_locations({"HOME": str(tmp_path),
                                            "CONTAINERS_REGISTRIES_CONF": "/c.conf"})
    assert main == Path("/c.conf") and Path("/etc/containers/registries.conf.d") in dirs
    user = tmp_path / ".config" / "containers" / "registries.conf"
    user.parent.mkdir(parents=True)
    user.write_text("")
    assert registries_conf_locations({"HOME": str(tmp_path)}) == (
        user, (user.parent / "registries.conf.d",))


def test_certs_d_lookup_and_half_pairs(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    (second / "r.io:5000").mkdir(parents=True)
    assert host_certs_dir("r.io:5000", (first, second)) == second / "r.io:5000"
    assert host_certs_dir("r.io", (first, second)) is None
    assert host_certs_dir("../x", (first,)) is None
    (second / "r.io:5000" / "client.cert").write_text("x")
    with pytest.raises(UserError, match=r"missing key client\.key"):
        make_ssl_context(certs_dir=second / "r.io:5000")
    (second / "r.io:5000" / "client.cert").unlink()
    (second / "r.io:5000" / "client.key").write_text("x")
    with pytest.raises(UserError, match=r"missing client certificate client\.cert"):
        make_ssl_context(certs_dir=second / "r.io:5000")


# --- imagetools' sources and annotations ----------------------------------------------------


def test_annotations_as_buildx_parses_them() -> None:
    a = Annotation.parse("manifest-descriptor[linux/arm64]:org.x=1=2")
    assert (a.kind, a.key, a.value, str(a.platform)) == (
        "manifest-descriptor", "org.x", "1=2", "linux/arm64")
    assert Annotation.parse("index:k=v").platform is None
    for bad, message in (("k=v", "has no type"), ("manifest:k=v", "cannot be set"),
                         ("foo:k=v", "unknown annotation type"), ("index:k", "key=value")):
        with pytest.raises(UserError, match=message):
            Annotation.parse(bad)


def test_sources_and_their_repositories() -> None:
    digest = "sha256:" + "b" * 64
    assert Source.parse(digest).digest == digest
    desc = Source.parse(json.dumps({"digest": digest, "platform": {"os": "linux",
                                                                   "architecture": "arm64"}}))
    assert desc.descriptor is not None and str(desc.descriptor.platform) == "linux/arm64"
    with pytest.raises(UserError, match="not a valid digest"):
        Source.parse("sha256:abc")
    with pytest.raises(UserError, match="got a manifest or index"):
        Source.parse('{"schemaVersion": 2, "manifests": []}')
    target = Reference.parse("r.io/app:1")
    [(ref, given)] = complete_sources([Source.parse(digest)], [target])
    assert str(ref) == f"r.io/app@{digest}" and given is None
    with pytest.raises(UserError, match="cannot infer the repository"):
        complete_sources([Source.parse(digest)], [target, Reference.parse("r.io/other:1")])


def test_index_encoding_is_buildx_s() -> None:
    from pybuild.oci.descriptor import Descriptor
    from pybuild.oci.platform import Platform

    d = Descriptor(media_type="application/vnd.oci.image.manifest.v1+json",
                   digest="sha256:" + "c" * 64, size=10,  # type: ignore[arg-type]
                   platform=Platform.parse("linux/arm/v7"), annotations=(("b", "2"), ("a", "1")))
    data = encode_index("application/vnd.oci.image.index.v1+json", [d], [("z", "1")])
    text = data.decode()
    assert text.startswith('{\n  "schemaVersion": 2,\n  "mediaType"')
    doc = json.loads(data)
    assert list(doc["manifests"][0]) == ["mediaType", "digest", "size", "annotations",
                                         "platform"]
    assert doc["manifests"][0]["platform"] == {"architecture": "arm", "os": "linux",
                                               "variant": "v7"}
    assert doc["annotations"] == {"z": "1"}
