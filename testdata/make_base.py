"""Make the busybox base image (amd64 + arm64) as an OCI layout; optionally import it.

    python testdata/make_base.py --out testdata/generated/busybox [--store-root DIR | --import]

The layout lands in OUT/oci (the Debian packages are cached in OUT/debs). The logic lives
in pybuild.testimages.busybox, so tests import it from there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pybuild.errors import PybuildError  # noqa: E402
from pybuild.testimages.busybox import (  # noqa: E402
    REF_NAME,
    build_busybox_layout,
    import_into_store,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "testdata" / "generated" / "busybox",
                        help="output dir: the layout goes to OUT/oci, packages to OUT/debs")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--store-root", type=Path, default=None,
                       help=f"also import the image as {REF_NAME} into this pybuild root")
    where.add_argument("--import", dest="import_default", action="store_true",
                       help=f"also import the image as {REF_NAME} into the default root")
    parser.add_argument("--epoch", type=int, default=None,
                        help="timestamps (default: $SOURCE_DATE_EPOCH, else 2000-01-01)")
    args = parser.parse_args(argv)
    try:
        layout = build_busybox_layout(args.out, epoch=args.epoch)
        print(f"busybox layout: {layout}")
        if args.store_root is not None or args.import_default:
            from pybuild.root import Root

            stores = Root(args.store_root)
            desc = import_into_store(stores.content, stores.images, layout, name=REF_NAME)
            print(f"imported {REF_NAME} ({desc.digest}) into {stores.path}")
    except PybuildError as exc:
        print(f"make_base: {exc}" + (f"\n  hint: {exc.hint}" if exc.hint else ""),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
