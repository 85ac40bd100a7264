"""`--output` parsing: buildx's CSV syntax into typed, frozen output specs."""

from __future__ import annotations

import dataclasses

import pytest

from pybuild.errors import UserError
from pybuild.exporters.base import (
    Annotation,
    CacheOnlyOutput,
    DockerOutput,
    ImageOptions,
    ImageOutput,
    LocalOutput,
    OCIOutput,
    OutputSpec,
    TarOutput,
    parse_output,
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("type=oci,dest=out.tar", OCIOutput(dest="out.tar")),
        ("type=oci,dest=dir,tar=false", OCIOutput(dest="dir", tar=False)),
        (
            "type=oci,dest=out.tar,name=app:1",
            OCIOutput(dest="out.tar", image=ImageOptions(names=("app:1",))),
        ),
        ("type=oci", OCIOutput(dest=None)),
        ("type=oci,dest=-", OCIOutput(dest="-")),
        (
            "type=docker,dest=x.tar,name=app:1",
            DockerOutput(dest="x.tar", image=ImageOptions(names=("app:1",))),
        ),
        ("type=local,dest=dir", LocalOutput(dest="dir")),
        ("type=local,dest=out,platform-split=false", LocalOutput(dest="out", platform_split=False)),
        ("type=local,dest=o,privileged-files=true", LocalOutput(dest="o", privileged_files=True)),
        ("type=tar,dest=x.tar", TarOutput(dest="x.tar")),
        ("type=tar,dest=-", TarOutput(dest="-")),
        (
            "type=image,name=reg.example/app:1,push=true",
            ImageOutput(image=ImageOptions(names=("reg.example/app:1",)), push=True),
        ),
        ("type=image,name=app", ImageOutput(image=ImageOptions(names=("app",)))),
        ("type=image", ImageOutput()),
        (
            "type=registry,name=localhost:5000/a/b:c",
            ImageOutput(image=ImageOptions(names=("localhost:5000/a/b:c",)), push=True),
        ),
        (
            "type=registry,name=r/a,push=false",
            ImageOutput(image=ImageOptions(names=("r/a",)), push=False),
        ),
        (
            "type=image,name=r/a,push=1,push-by-digest=true,registry.insecure=true",
            ImageOutput(
                image=ImageOptions(names=("r/a",)), push=True, push_by_digest=True, insecure=True
            ),
        ),
        ("type=cacheonly", CacheOnlyOutput()),
        # buildx's shorthands
        ("out", LocalOutput(dest="out")),
        ("./some/dir", LocalOutput(dest="./some/dir")),
        ("-", TarOutput(dest="-")),
        # keys are case-insensitive, values are not; whitespace around fields is dropped
        ("TYPE=local, DEST=Out", LocalOutput(dest="Out")),
        ("type=OCI,dest=o.tar,tar=True", OCIOutput(dest="o.tar")),
        # CSV quoting keeps a comma inside a value: several names
        (
            'type=image,"name=a:1,b:2"',
            ImageOutput(image=ImageOptions(names=("a:1", "b:2"))),
        ),
        (
            "type=oci,dest=o.tar,compression=zstd,compression-level=3,force-compression=true,"
            "oci-mediatypes=true,rewrite-timestamp=true",
            OCIOutput(
                dest="o.tar",
                image=ImageOptions(
                    compression="zstd",
                    compression_level=3,
                    force_compression=True,
                    oci_mediatypes=True,
                    rewrite_timestamp=True,
                ),
            ),
        ),
        (
            "type=image,annotation.org.opencontainers.image.title=t,"
            "annotation-index.k=v,annotation-manifest-descriptor.d=x",
            ImageOutput(
                image=ImageOptions(
                    annotations=(
                        Annotation(level="manifest", key="org.opencontainers.image.title",
                                   value="t"),
                        Annotation(level="index", key="k", value="v"),
                        Annotation(level="manifest-descriptor", key="d", value="x"),
                    )
                )
            ),
        ),
    ],
)
def test_parse(spec: str, expected: OutputSpec) -> None:
    assert parse_output(spec) == expected


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("type=ocii,dest=x", "did you mean 'oci'"),
        ("type=regsitry,name=a", "did you mean 'registry'"),
        ("type=nope", "unknown output type 'nope'"),
        ("type=oci,dset=x.tar", "did you mean 'dest'"),
        ("type=local,dest=d,nmae=x", "unknown key 'nmae'"),
        ("type=oci,dest=x,tar=maybe", "not a boolean"),
        ("type=tar,dest=x,privileged-files=true", "not valid for type=tar"),
        ("type=local,dest=x,privileged-file=true", "did you mean 'privileged-files'"),
        ("type=local", "needs dest="),
        ("type=local,dest=-", "cannot go to stdout"),
        ("type=oci,tar=false", "needs dest="),
        ("type=oci,dest=-,tar=false", "cannot go to stdout"),
        ("dest=x.tar", "type is required"),
        ("type=oci,dest", "is not KEY=VALUE"),
        ("type=oci,dest=a,dest=b", "given twice"),
        ("type=oci,dest=x,compression=lz4", "unknown compression"),
        ("type=oci,dest=x,compression-level=high", "not an integer"),
        ("type=oci,dest=x,annotation.=v", "is not an annotation key"),
        ("type=oci,dest=x,annotation-manfest.k=v", "did you mean 'manifest'"),
        ("type=oci,dest=x,annotation-index[linux/amd64].k=v", "belong to the whole index"),
        ("type=oci,dest=x,annotation-manifest[linux/a/b/c].k=v", "invalid platform"),
        ("", "empty value"),
        ('type=oci,"dest=x', "not a valid CSV record"),
    ],
)
def test_errors(spec: str, needle: str) -> None:
    with pytest.raises(UserError) as info:
        parse_output(spec)
    assert needle in str(info.value)
    assert info.value.code == "bad-output"


def test_platform_annotations_and_bare_force_compression() -> None:
    spec = parse_output("type=oci,dest=o.tar,annotation-manifest[linux/arm64].a=1,"
                        "annotation[linux/amd64].b=2,annotation-manifest-descriptor[linux/arm64"
                        "/v8].c=3,force-compression=")
    assert isinstance(spec, OCIOutput)
    assert [(a.level, str(a.platform), a.key, a.value) for a in spec.image.annotations] == [
        ("manifest", "linux/arm64", "a", "1"), ("manifest", "linux/amd64", "b", "2"),
        ("manifest-descriptor", "linux/arm64", "c", "3")]
    assert spec.image.force_compression  # BuildKit: a bare force-compression= is true


def test_estargz_is_refused_by_name() -> None:
    with pytest.raises(UserError) as info:
        parse_output("type=image,name=a,compression=estargz")
    assert "compression=estargz is not supported" in str(info.value)
    assert info.value.code == "unsupported-option" and "zstd" in (info.value.hint or "")


def test_build_annotations_go_first_into_image_outputs() -> None:
    from pybuild.exporters.base import with_annotations

    build = (Annotation(level="manifest", key="k", value="build"),)
    own = parse_output("type=oci,dest=o.tar,annotation.k=own")
    merged = with_annotations(own, build)
    assert isinstance(merged, OCIOutput)
    assert [a.value for a in merged.image.annotations] == ["build", "own"]
    local = parse_output("type=local,dest=d")
    assert with_annotations(local, build) is local


def test_key_of_another_type_says_which_types_take_it() -> None:
    with pytest.raises(UserError) as info:
        parse_output("type=local,dest=d,push=true")
    assert "not valid for type=local" in str(info.value)
    assert info.value.hint is not None
    assert "type=image" in info.value.hint and "dest" in info.value.hint


def test_annotations_only_for_image_types() -> None:
    with pytest.raises(UserError, match="unknown key"):
        parse_output("type=local,dest=d,annotation.a=b")


def test_specs_are_frozen_and_stdout_is_explicit() -> None:
    spec = parse_output("type=oci,dest=-")
    assert isinstance(spec, OCIOutput) and spec.to_stdout
    assert not OCIOutput(dest="x.tar").to_stdout
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.dest = "y"  # type: ignore[misc]


def test_match_dispatch_is_exhaustive_over_the_union() -> None:
    def kind(spec: OutputSpec) -> str:
        match spec:
            case OCIOutput():
                return "oci"
            case DockerOutput():
                return "docker"
            case LocalOutput():
                return "local"
            case TarOutput():
                return "tar"
            case ImageOutput(push=True):
                return "push"
            case ImageOutput():
                return "image"
            case CacheOnlyOutput():
                return "cacheonly"

    assert kind(parse_output("type=registry,name=a")) == "push"
    assert kind(parse_output("dir")) == "local"
