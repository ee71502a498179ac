"""`slotssm data ...`: generate | import | info | list.

    slotssm data generate NAME --num N --out DIR [--seed S] [--set param=value ...] [--batch-size B]
    slotssm data import SRC --out DIR [--size S] [--frames T] [--resize crop|stretch]
    slotssm data info DIR [--png PATH] [--video I] [--verify]
    slotssm data list
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from slotssm.config import positive_int

__all__ = ["add_parser", "parse_sets"]


def parse_value(text: str) -> Any:
    """A --set value: JSON if it parses (6, 0.5, [1, 2], true), a comma list of those, else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if "," in text:
        return [parse_value(part.strip()) for part in text.split(",") if part.strip()]
    return text


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """["key=value", ...] -> {key: parsed value}; a malformed item is a ValueError naming it."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set: expected param=value, got {item!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


def _cmd_generate(args: argparse.Namespace) -> int:
    from slotssm.data.store import generate_to_dir

    params = parse_sets(args.set)
    _check_out(args)
    manifest = generate_to_dir(
        args.name, args.out, args.num, args.seed, batch_size=args.batch_size, progress=not args.quiet, **params
    )
    total = sum((Path(args.out) / e["file"]).stat().st_size for e in manifest["arrays"].values())
    print(f"wrote {args.num} {args.name} videos to {args.out} ({total / 2**20:.1f} MiB, manifest.json)")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from slotssm.data.importer import import_videos

    manifest = import_videos(args.src, args.out, size=args.size, frames=args.frames, resize=args.resize,
                             progress=not args.quiet)
    entry = manifest["arrays"]["video"]
    total = (Path(args.out) / entry["file"]).stat().st_size
    print(f"imported {manifest['num_videos']} videos of {manifest['params']['frames']} frames at "
          f"{args.size}x{args.size} into {args.out} ({total / 2**20:.1f} MiB, manifest.json); train on it with "
          f"--set data.source=folder --set data.root={args.out}")
    return 0


def _check_out(args: argparse.Namespace) -> None:
    """Refuse to overwrite: --out must be new, empty, or (with --force) anything but a file."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        what = "a dataset" if (out / "manifest.json").is_file() else "files"
        raise ValueError(f"--out {out}: already holds {what}; pass --force to overwrite it, or choose another --out")


def _cmd_info(args: argparse.Namespace) -> int:
    from slotssm.data.preview import save_preview
    from slotssm.data.store import load

    arrays, manifest = load(args.dir, verify=args.verify)
    print(f"{'dataset':<16}{args.dir}")
    for field in ("generator", "version", "seed", "num_videos", "slotssm_version"):
        print(f"{field:<16}{manifest.get(field)}")
    print(f"{'params':<16}" + json.dumps(manifest.get("params", {}), sort_keys=True))
    print(f"{'array':<18}{'dtype':<8}{'shape':<26}dims")
    for key, e in manifest["arrays"].items():
        print(f"{key:<18}{e['dtype']:<8}{str(tuple(e['shape'])):<26}{' '.join(e.get('dims') or [])}")
    if args.verify:
        print("sha256    all files match the manifest")
    dims = {k: e.get("dims") for k, e in manifest["arrays"].items()}
    keys = [k for k in manifest.get("images", []) if dims.get(k)]
    if not keys:
        print("preview   no image arrays with named axes in this manifest")
        return 0
    png = Path(args.png) if args.png else Path(args.dir) / "preview.png"
    if not 0 <= args.video < int(manifest.get("num_videos", 1)):
        raise ValueError(f"--video: expected in [0, {manifest.get('num_videos')}), got {args.video}")
    save_preview(png, arrays, dims, keys, video=args.video)
    print(f"preview   saved video {args.video} ({', '.join(keys)}) to {png}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from slotssm.data.registry import get_spec, list_generators

    for name in list_generators():
        spec = get_spec(name)
        print(f"{name} (version {spec.version}): {spec.doc}")
        for key, value in spec.defaults.items():
            print(f"    {key} = {value!r}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the `data` command group with its generate, import, info and list sub-commands."""
    data = subparsers.add_parser("data", help="generate, import, inspect and list datasets")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    gen = sub.add_parser("generate", help="generate a synthetic dataset into a directory")
    gen.add_argument("name", help="generator name (see `slotssm data list`)")
    gen.add_argument("--num", type=positive_int, required=True, help="number of videos (>= 1)")
    gen.add_argument("--out", required=True, help="output directory (new or empty, unless --force)")
    gen.add_argument("--force", action="store_true", help="overwrite what --out holds")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--set", action="append", metavar="PARAM=VALUE", help="override a generator parameter")
    gen.add_argument("--batch-size", type=positive_int, default=None, help="videos per batch (default: automatic)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=_cmd_generate)

    imp = sub.add_parser("import", help="import a folder of videos or frame folders into a dataset directory",
                         description="Decode every video under SRC (mp4, avi, mkv, webm, gif, npy, or folders of "
                         "PNG/JPEG frames), fit its first T frames to SxS and store them with a manifest.")
    imp.add_argument("src", metavar="SRC", help="folder of videos and/or frame folders (searched recursively)")
    imp.add_argument("--out", required=True, help="new dataset directory (refused if it exists and is not empty)")
    imp.add_argument("--size", type=int, default=64, help="frame side S in pixels (default 64)")
    imp.add_argument("--frames", type=int, default=None, help="frames T per video (default: the shortest video)")
    imp.add_argument("--resize", choices=("crop", "stretch"), default="crop",
                     help="crop: the central square, stretch: the whole frame (default crop)")
    imp.add_argument("--quiet", action="store_true", help="no progress bars")
    imp.set_defaults(func=_cmd_import)

    info = sub.add_parser("info", help="print a dataset's manifest and save a PNG preview")
    info.add_argument("dir", help="dataset directory")
    info.add_argument("--png", default=None, help="preview path (default: DIR/preview.png)")
    info.add_argument("--video", type=int, default=0, help="which video to preview")
    info.add_argument("--verify", action="store_true", help="check every file's sha256")
    info.set_defaults(func=_cmd_info)

    lst = sub.add_parser("list", help="list generators and their default parameters")
    lst.set_defaults(func=_cmd_list)
