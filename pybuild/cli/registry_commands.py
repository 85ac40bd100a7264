"""The registry commands (`pull`, `push`, `login`, `logout`, `imagetools`), and the registry
flags every command that meets a registry shares.

The flags and the environment (auth files, certs.d bases, registries.conf, the credential
helpers' PATH, the retry budget: see `pybuild.api.edge`) become one `RegistryOptions` value
handed down. Building it imports nothing heavy, since every build makes one.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pybuild.errors import UserError

if TYPE_CHECKING:
    import argparse

    from pybuild.api import Builder, RegistryOptions

COMMANDS = ("pull", "push", "login", "logout", "imagetools")


# --- shared flags and options -----------------------------------------------------------


def registry_flags(p: argparse.ArgumentParser, *, mirrors: bool = False) -> None:
    p.add_argument("--creds", default="", help="registry credentials USER:PASSWORD")
    p.add_argument("--authfile", default="",
                   help="auth file (default: $REGISTRY_AUTH_FILE, containers' auth.json, "
                        "~/.docker/config.json, and the credential helpers they name)")
    p.add_argument("--insecure", action="store_true",
                   help="allow plain HTTP and unverified TLS for the registry")
    p.add_argument("--ca-cert", default="",
                   help="extra CA certificate (PEM) to trust (certs.d/<host:port>/ca.crt is "
                        "read too); a build's ADD https:// trusts it as well")
    if mirrors:
        p.add_argument("--registry-mirror", action="append", default=[],
                       metavar="[REGISTRY=]HOST[:PORT][/PATH]",
                       help="pull REGISTRY's images (default docker.io) from this mirror "
                            "first (repeatable, tried in order, then registries.conf "
                            "mirrors, then the registry itself; http:// for plain HTTP)")


def registry_options(args: argparse.Namespace) -> RegistryOptions:
    """The flags, the environment and the standard locations as one RegistryOptions."""
    from pybuild.api import registry_options as options

    return options(creds=getattr(args, "creds", "") or None,
                   auth_file=getattr(args, "authfile", ""),
                   insecure=bool(getattr(args, "insecure", False)),
                   ca_cert=getattr(args, "ca_cert", ""),
                   mirrors=getattr(args, "registry_mirror", None) or (),
                   root=getattr(args, "root", None) or None)


# --- parsers ---------------------------------------------------------------------------------


def add_parsers(sub: Any) -> None:
    """The registry commands' parsers (`sub` is main's subparsers object)."""
    pl = sub.add_parser("pull", help="pull an image from a registry into the local store",
                        description="Pull an image into the local store: mirrors from "
                        "--registry-mirror and registries.conf first, then the registry. "
                        "Transient faults are retried (see $PYBUILD_REGISTRY_RETRIES).")
    pl.add_argument("image")
    pl.add_argument("--platform", default="", help="platform to pull (default: this host's)")
    pl.add_argument("-a", "--all-platforms", action="store_true", help="pull every platform")
    pl.add_argument("-q", "--quiet", action="store_true", help="print only the reference")
    registry_flags(pl, mirrors=True)

    ps = sub.add_parser("push", help="push an image from the local store to a registry",
                        description="Push a stored image. Layers another repository of the "
                        "same registry has (seen by an earlier pull or push) are mounted, "
                        "not uploaded.")
    ps.add_argument("image")
    ps.add_argument("destination", nargs="?", default="",
                    help="registry reference (default: the image's own name)")
    ps.add_argument("--platform", default="",
                    help="push only this platform's image of a multi-platform index")
    ps.add_argument("--compression", default="gzip", choices=["gzip", "zstd", "uncompressed"],
                    help="compression of the pushed image's uncompressed layers (default: "
                         "gzip; layers already compressed another way are kept, as BuildKit "
                         "keeps them without force-compression)")
    ps.add_argument("-q", "--quiet", action="store_true", help="print only the reference")
    registry_flags(ps)

    li = sub.add_parser("login", help="log in to a registry",
                        description="Log in to a registry (default: docker.io). The "
                        "credentials are checked against the registry first, then stored "
                        "where docker keeps them: the credential helper of credHelpers/"
                        "credsStore when one is configured, else \"auths\" in "
                        "~/.docker/config.json (or --authfile, $REGISTRY_AUTH_FILE, an "
                        "existing podman auth.json). A failed login stores nothing.")
    li.add_argument("server", nargs="?", default="", help="registry (default: docker.io)")
    li.add_argument("-u", "--username", default=None, help="user name")
    li.add_argument("-p", "--password", default=None,
                    help='password or token, or "-" to read it from stdin (insecure: use '
                         "--password-stdin)")
    li.add_argument("--password-stdin", action="store_true",
                    help="read the password or token from stdin")
    li.add_argument("--authfile", default="", help="store the credentials in this file")
    li.add_argument("--insecure", action="store_true",
                    help="allow plain HTTP and unverified TLS for the registry")
    li.add_argument("--ca-cert", default="", help="extra CA certificate (PEM)")

    lo = sub.add_parser("logout", help="log out of a registry",
                        description="Remove the stored credentials of a registry (default: "
                        "docker.io) from its credential helper and the auth files.")
    lo.add_argument("server", nargs="?", default="", help="registry (default: docker.io)")
    lo.add_argument("--authfile", default="", help="remove them from this file only")

    it = sub.add_parser("imagetools", help="work with manifest lists in a registry",
                        description="Inspect remote images and make multi-platform indexes "
                        "from images already pushed, as `docker buildx imagetools`.")
    itsub = it.add_subparsers(dest="imagetools_command", metavar="COMMAND")
    ins = itsub.add_parser("inspect", help="show details of an image in the registry")
    ins.add_argument("name")
    ins.add_argument("--raw", action="store_true", help="show the original, unformatted JSON")
    ins.add_argument("--format", default="",
                     help='"json" (also "{{json .}}"), "{{json .Manifest}}", "{{json .Image}}"'
                          ' or "{{.Manifest}}" (the default text); other Go templates are '
                          "not evaluated and refused")
    registry_flags(ins)
    cr = itsub.add_parser("create", help="create an image index from existing images",
                          description="Create a new image index from source images (tags, "
                          "digests of the target repository, or descriptor JSON) and push it "
                          "to every --tag.")
    cr.add_argument("sources", nargs="*", metavar="SOURCE")
    cr.add_argument("-t", "--tag", action="append", default=[],
                    help="set reference for the new image (repeatable)")
    cr.add_argument("-f", "--file", action="append", default=[],
                    help="read a source descriptor from a file")
    cr.add_argument("--append", action="store_true",
                    help="append to the existing manifest of the first --tag")
    cr.add_argument("--annotation", action="append", default=[],
                    help="add an annotation: index:KEY=VALUE or "
                         "manifest-descriptor[PLATFORM]:KEY=VALUE")
    cr.add_argument("--dry-run", action="store_true",
                    help="show the final index instead of pushing it")
    cr.add_argument("-p", "--platform", action="append", default=[],
                    help="keep only these platforms of the sources")
    cr.add_argument("--prefer-index", default="true", choices=["true", "false"],
                    help="with a single manifest source, make an index (default) or copy it")
    cr.add_argument("--metadata-file", default="",
                    help="write the result's descriptor and names as JSON")
    registry_flags(cr)


# --- bodies ----------------------------------------------------------------------------------


def run(args: argparse.Namespace, builder: Callable[[], Builder],
        parser: argparse.ArgumentParser | None = None) -> int:
    """Dispatch one registry command; `builder()` opens the pybuild root (not for login)."""
    match args.command:
        case "pull":
            return pull(builder(), args)
        case "push":
            return push(builder(), args)
        case "login":
            return login(args)
        case "logout":
            return logout(args)
        case "imagetools":
            match getattr(args, "imagetools_command", None):
                case "inspect":
                    return imagetools_inspect(args)
                case "create":
                    return imagetools_create(builder(), args)
            if parser is not None:
                parser.parse_args(["imagetools", "--help"])
            return 2
    raise UserError(f"unknown registry command {args.command!r}")


def pull(builder: Builder, args: argparse.Namespace) -> int:
    from pybuild.oci.platform import Platform, host
    from pybuild.oci.reference import Reference

    platforms = None if args.all_platforms else [
        Platform.parse(args.platform) if args.platform else host()]
    desc = builder.pull(args.image, platforms, registry=registry_options(args))
    ref = Reference.parse(args.image)
    if args.quiet:
        print(str(ref))  # docker pull -q prints the canonical reference
    else:
        print(f"pulled {ref.familiar} {desc.digest}")
    return 0


def push(builder: Builder, args: argparse.Namespace) -> int:
    from pybuild.oci.platform import Platform

    pushed = builder.push(args.image, args.destination, registry=registry_options(args),
                          compression=args.compression,
                          platform=Platform.parse(args.platform) if args.platform else None)
    if args.quiet:  # docker push -q prints the reference pushed to (canonical)
        from pybuild.oci.reference import Reference

        print(str(Reference.parse(pushed.reference)))
    else:
        print(f"pushed {pushed}")
    return 0


def _read_secret_stdin() -> str:
    data = sys.stdin.read()
    for eol in ("\r\n", "\n", "\r"):  # docker strips one line ending, nothing else
        if data.endswith(eol):
            return data[: -len(eol)]
    return data


def _login_credentials(args: argparse.Namespace) -> tuple[str, str]:
    """docker's verifyLoginFlags/verifyLoginOptions, then a prompt on a terminal."""
    user, password = args.username, args.password
    stdin = args.password_stdin or password == "-"
    if stdin:
        if password not in (None, "-"):
            raise UserError("conflicting options: cannot specify both --password and "
                            "--password-stdin")
        if user is None:
            raise UserError("the --password-stdin option requires --username to be set")
    if user is not None and not user:
        raise UserError("username is empty")
    if password is not None and not password:
        raise UserError("password is empty")
    if stdin:
        password = _read_secret_stdin()
        if not password.strip():
            raise UserError("password is empty")
    elif password is not None:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
              file=sys.stderr)
    if user is None or password is None:
        if not sys.stdin.isatty():
            raise UserError("cannot perform an interactive login from a non-TTY device",
                            hint="give --username and --password-stdin")
        import getpass

        if user is None:
            user = input("Username: ").strip()
            if not user:
                raise UserError("username is empty")
        if password is None:
            password = getpass.getpass("Password: ")
            if not password:
                raise UserError("password is empty")
    return user, password


def login(args: argparse.Namespace) -> int:
    from pybuild import api

    target = api.login_target(args.server)
    locations = api.auth_locations(args.authfile)
    options = registry_options(args)
    if args.username is None and args.password is None and not args.password_stdin:
        stored = api.stored_credentials(target, locations)
        if stored is not None:  # docker first tries what it has
            print("Authenticating with existing credentials..."
                  + (f" [Username: {stored.username}]" if stored.username else ""),
                  file=sys.stderr)
            try:
                result = api.login(target, stored, locations, options)
            except api.RegistryAuthError:
                print("Stored credentials invalid or expired", file=sys.stderr)
            else:
                _report_login(result)
                return 0
    user, password = _login_credentials(args)
    result = api.login(target, api.credentials(user, password), locations, options)
    _report_login(result)
    return 0


def _report_login(result: Any) -> None:
    if result.anonymous:
        print("note: the registry asks for no credentials", file=sys.stderr)
    if result.stored.helper:
        print(f"credentials stored in {result.stored.describe()}", file=sys.stderr)
    elif result.identity_token:
        print(f"an identity token (not the password) is stored in {result.stored.path}",
              file=sys.stderr)
    else:
        print(f"WARNING! Your credentials are stored unencrypted in '{result.stored.path}'.\n"
              "Configure a credential helper (credsStore) to remove this warning.",
              file=sys.stderr)
    print("Login Succeeded")


def logout(args: argparse.Namespace) -> int:
    from pybuild import api

    target = api.login_target(args.server)
    removed = api.logout(target, api.auth_locations(args.authfile))
    if not removed:
        print(f"Not logged in to {target}")
        return 0
    print(f"Removing login credentials for {target}")
    for where in removed:
        print(f"  removed from {where}", file=sys.stderr)
    return 0


# --- imagetools ------------------------------------------------------------------------------


def _pad(rows: list[tuple[str, str]], prefix: str = "") -> list[str]:
    """Go's tabwriter (padding 1): labels padded to the widest one."""
    width = max((len(prefix + k) for k, _ in rows), default=0) + 1
    return [f"{(prefix + k).ljust(width)}{v}".rstrip() for k, v in rows]


def _inspect_text(found: Any) -> str:
    from pybuild.digest import Digest
    from pybuild.oci.reference import Reference

    ref = found.reference
    lines = _pad([("Name:", str(ref)), ("MediaType:", found.descriptor.media_type),
                  ("Digest:", str(found.descriptor.digest))])
    if found.index is not None:
        lines += ["", "Manifests:"]
        for i, m in enumerate(found.index.manifests):
            if i:
                lines.append("")
            name = str(Reference(domain=ref.domain, path=ref.path, digest=Digest(m.digest)))
            rows = [("Name:", name), ("MediaType:", m.media_type)]
            if m.platform is not None:
                rows.append(("Platform:", str(m.platform)))
                if m.platform.os_version:
                    rows.append(("OSVersion:", m.platform.os_version))
                if m.platform.os_features:
                    rows.append(("OSFeatures:", ", ".join(m.platform.os_features)))
            if m.urls:
                rows.append(("URLs:", ", ".join(m.urls)))
            if m.annotations:
                rows.append(("Annotations:", ""))
            lines += _pad(rows, "  ")
            if m.annotations:
                lines += _pad([(f"{k}:", v) for k, v in sorted(m.annotations)], "    ")
    return "\n".join(lines) + "\n"


# --format values, blanks removed -> what to print
_FORMATS = {"json": "all", "{{json.}}": "all", "{{json.Manifest}}": "manifest",
            "{{json.Image}}": "image", "{{.Manifest}}": "text"}


def imagetools_inspect(args: argparse.Namespace) -> int:
    import json

    from pybuild.api import descriptor_json, imagetools_inspect

    if args.format and args.raw:
        raise UserError("format and raw cannot be used together")
    fmt = _FORMATS.get(re.sub(r"\s+", "", args.format)) if args.format else "text"
    if fmt is None:
        raise UserError(f"--format {args.format!r} is not supported: pybuild does not evaluate "
                        "Go templates; use json, {{json .}}, {{json .Manifest}}, "
                        "{{json .Image}} or {{.Manifest}}", code="bad-format")
    found = imagetools_inspect(args.name, registry_options(args),
                               with_configs=fmt in ("all", "image"))
    if args.raw:
        sys.stdout.buffer.write(found.raw)  # no newline: the bytes keep their digest
        return 0
    if fmt == "text":
        sys.stdout.write(_inspect_text(found))
        return 0
    manifest: Any = descriptor_json(found.descriptor)
    if found.index is not None:
        manifest = {"schemaVersion": 2, "mediaType": found.descriptor.media_type,
                    "digest": str(found.descriptor.digest), "size": found.descriptor.size,
                    "manifests": [descriptor_json(d) for d in found.index.manifests]}
        if found.index.annotations:
            manifest["annotations"] = dict(found.index.annotations)
    image: Any = (dict(found.configs) if found.index is not None
                  else (found.configs[0][1] if found.configs else None))
    value = {"all": {"name": args.name, "manifest": manifest, "image": image},
             "manifest": manifest, "image": image}[fmt]
    print(json.dumps(value, indent=2))
    return 0


def imagetools_create(builder: Builder, args: argparse.Namespace) -> int:
    import json

    from pybuild.api import descriptor_json, imagetools_create
    from pybuild.oci.reference import Reference

    texts = []
    for path in args.file:
        try:
            with open(path, encoding="utf-8") as f:
                texts.append(f.read())
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror}") from None
    texts += args.sources
    if not texts:
        raise UserError("no sources specified")
    result = imagetools_create(
        texts, args.tag, builder.root.content, annotations=args.annotation,
        platforms=args.platform, append=args.append,
        prefer_index=args.prefer_index == "true", dry_run=args.dry_run,
        options=registry_options(args))
    if args.dry_run:
        sys.stdout.write(result.data.decode() + "\n")
        return 0
    for pushed in result.pushed:
        print(f"pushed {pushed}", file=sys.stderr)
    if args.metadata_file:
        repos = sorted({Reference.parse(t).repository for t in args.tag})
        with open(args.metadata_file, "w", encoding="utf-8") as f:
            json.dump({"containerimage.descriptor": descriptor_json(result.descriptor),
                       "image.name": ",".join(repos)}, f, indent=2)
    return 0
