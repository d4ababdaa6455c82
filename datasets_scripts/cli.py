"""Command line (``python -m datasets_scripts``): build the configs to Parquet + card, or print Table 1.

python -m datasets_scripts build --output_dir DIR [--data_dir UMT_DATA] [--authors_data_dir MY_DATA]
    [--image_dir_2015 D]
    [--image_dir_2017 D] [--configs ...] [--overwrite] [--max_shard_size 500MB]
    [--push_to_hub USER/REPO [--private]]
python -m datasets_scripts stats FOLDER_OR_REPO [--configs ...]

``build`` checks the output folder before building anything and builds beside it
(:mod:`~datasets_scripts.output_folder`): the configs it builds and the card replace theirs only once the whole
build has succeeded; with ``--overwrite``, the configs of the previous export that it does not build stay, and the
new card describes them too (:func:`~datasets_scripts.hub_layout.read_exported_configs`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import datasets

from .hub_layout import (
    ExportedConfig,
    check_parquet_shards,
    push_folder_to_hub,
    read_exported_configs,
    table1_columns,
    write_config,
    write_dataset_card,
)
from .output_folder import OutputFolderError, move_into, staging_folder
from .statistics import config_statistics, format_table1
from .twitter_mner import (
    AUTHORS_ARCHIVE_URL,
    IMAGE_INSTRUCTIONS,
    UMT_DATA_URL,
    EmptySplitError,
    TwitterMNER,
    build_dataset,
)
from .umt_format import TwitterFormatError

CONFIG_NAMES = [config.name for config in TwitterMNER.BUILDER_CONFIGS]
AUTHORS_CONFIGS = [config.name for config in TwitterMNER.BUILDER_CONFIGS if config.layout == "authors"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m datasets_scripts", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="build configs, write Parquet shards and README.md")
    build.add_argument("--output_dir", type=Path, required=True, help="export folder (Hub layout)")
    build.add_argument("--data_dir", type=Path, help="UMT data/ folder; default: download from GitHub")
    build.add_argument(
        "--authors_data_dir",
        type=Path,
        help="the UMGF authors' my_data/ folder, for the *_authors configs (default: download their repository)",
    )
    build.add_argument("--image_dir_2015", type=Path, help="folder of Twitter-2015 <IMGID>.jpg files")
    build.add_argument("--image_dir_2017", type=Path, help="folder of Twitter-2017 <IMGID>.jpg files")
    build.add_argument(
        "--configs",
        nargs="+",
        choices=CONFIG_NAMES,
        help="default: all (twitter2017c only with --image_dir_2017, the *_authors ones only with --authors_data_dir)",
    )
    build.add_argument(
        "--overwrite", action="store_true", help="replace the built configs of a previous export in output_dir"
    )
    build.add_argument("--max_shard_size", default="500MB", help="largest Parquet shard (default 500MB)")
    build.add_argument("--push_to_hub", metavar="REPO_ID", help="also upload the folder as this Hub dataset")
    build.add_argument("--private", action="store_true", help="create the Hub repo as private")

    stats = commands.add_parser("stats", help="print Table 1 (entities per type, tweets) of built configs")
    stats.add_argument("path", help="export folder or Hub dataset repo")
    stats.add_argument("--configs", nargs="+", help="default: every config of the dataset card")
    return parser


def _build(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    image_dirs = {"twitter2015": args.image_dir_2015, "twitter2017": args.image_dir_2017}
    configs = args.configs or [
        name for name in CONFIG_NAMES if name not in AUTHORS_CONFIGS or args.authors_data_dir is not None
    ]
    if "twitter2017c" in configs and args.image_dir_2017 is None:
        message = (
            "twitter2017c cannot be built without --image_dir_2017: it is Twitter-2017 minus the tweets "
            f"whose image is missing, unreadable or blank.\n{IMAGE_INSTRUCTIONS}"
        )
        if args.configs:
            parser.error(message)
        print(f"SKIPPED {message}\n", file=sys.stderr)
        configs = [name for name in configs if name != "twitter2017c"]
    staging = staging_folder(args.output_dir)
    try:
        kept = _kept_configs(args.output_dir, configs, args.overwrite, parser)
        with tempfile.TemporaryDirectory() as cache_dir:
            exported = read_exported_configs(args.output_dir, kept, cache_dir) if kept else {}
            for name in configs:
                config = TwitterMNER.builder_configs[name]
                image_dir = image_dirs[config.source]
                data_dir = args.authors_data_dir if config.layout == "authors" else args.data_dir
                built, reports = build_dataset(name, data_dir, image_dir, cache_dir)
                source = _text_source(config.layout, data_dir)
                for split, report in reports.items():
                    print(f"{name} {split}: {report.summary()}")
                data_files = write_config(built, staging, name, args.max_shard_size)
                exported[name] = ExportedConfig.built(name, built, data_files, reports, source)
            exported = {name: exported[name] for name in CONFIG_NAMES if name in exported}
            card = write_dataset_card(staging, exported, args.push_to_hub)
        move_into(staging, args.output_dir, [*configs, card.name])
    finally:
        shutil.rmtree(staging)
    kept_note = f"; kept from the previous export: {', '.join(kept)}" if kept else ""
    print(f"\n{format_table1(table1_columns(exported))}\n")
    print(f"wrote {args.output_dir} ({card.name} + Parquet shards{kept_note})")
    if args.push_to_hub:
        print(f"pushed: {push_folder_to_hub(args.output_dir, args.push_to_hub, args.private)}")


def _text_source(layout: str, data_dir: Path | None) -> str:
    """Where a config's text was read from, for the dataset card."""
    if layout == "authors":
        where = "a local copy of their `my_data/` folder" if data_dir else f"{AUTHORS_ARCHIVE_URL} (`my_data/`)"
        return f"the UMGF authors' text, {where}"
    return "a local copy of its `data/` folder" if data_dir else f"{UMT_DATA_URL}/<dataset>/<split>.txt"


def _kept_configs(folder: Path, configs: Sequence[str], overwrite: bool, parser: argparse.ArgumentParser) -> list[str]:
    """The configs of the previous export in ``folder`` that a build of ``configs`` keeps.

    Refuses a non-empty ``folder`` without ``overwrite``, and a folder holding an entry that no build writes (the
    user's files). Hidden entries (``.git``, ``.gitattributes`` of a Hub clone) are never touched.
    """
    entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")] if folder.is_dir() else []
    if entries and not overwrite:
        parser.error(f"{folder} is not empty (use --overwrite to replace a previous export)")
    unexpected = sorted(entry.name for entry in entries if entry.name not in {"README.md", *CONFIG_NAMES})
    if unexpected:
        parser.error(f"refusing to overwrite {folder}: it holds {unexpected}, which no build writes")
    return [name for name in CONFIG_NAMES if name not in configs and (folder / name).exists()]


def _stats(args: argparse.Namespace) -> None:
    if Path(args.path).is_dir():
        check_parquet_shards(args.path)
    columns = {}
    for name in args.configs or datasets.get_dataset_config_names(args.path):
        columns.update(config_statistics(name, datasets.load_dataset(args.path, name)))
    print(format_table1(columns))


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            _build(args, parser)
        else:
            _stats(args)
    except (TwitterFormatError, EmptySplitError, OutputFolderError, FileNotFoundError) as error:
        parser.exit(1, f"error: {error}\n")


if __name__ == "__main__":
    main()
