"""Twitter-2015, Twitter-2017 and Twitter-2017c as a ``datasets.GeneratorBasedBuilder``.

``datasets`` >= 4 no longer runs loading scripts, so this builder is used from Python
(:func:`build_dataset`) and by the ``python -m datasets_scripts build`` command, which exports the result
as Parquet plus a dataset card that ``datasets.load_dataset(folder_or_repo, config)`` reads with no code.

Sources:

* text: the UMT release files (Yu et al. 2020), read from a local copy of its ``data/`` folder
  (``<data_dir>/twitter2015/train.txt`` ...) or downloaded from GitHub;
* the ``*_authors`` configs: the UMGF authors' own text (``my_data/`` of their repository, one ``<n>_s/_l/_p.txt``
  triple per tweet, read in their order: :mod:`~datasets_scripts.authors_format`), from a local copy of their
  ``my_data/`` folder or downloaded (their repository's archive at a fixed commit);
* images: a folder the user downloaded by hand (see :data:`IMAGE_INSTRUCTIONS`), one
  ``<image_dir>/<IMGID>.jpg`` per tweet, the naming of the UMT release and its training code.

The ``image`` column is None when the image file is missing, unreadable (PIL cannot decode it
completely) or a *blank placeholder* (every pixel the same colour: the UMGF paper, footnote 2, says the
original Twitter-2017 replaced missing images by a uniform empty image). Each case is counted per split
in :attr:`TwitterMNER.image_reports`; none stops the build. ``twitter2017c`` is ``twitter2017`` without
those tweets, so it can only be built from an image folder; a split left without any tweet that way (the image
folder is not the right one) is an error naming the split, the file and the folder.

An image is stored as its bytes with ``path`` None, so the dataset never depends on a file: ``datasets`` keeps
only the path of an image whose ``path`` exists relative to the working directory, so a file name there (the
build run from inside the image folder) would drop the bytes.

Grounding columns follow CONTRACT.md "Dataset columns" and are left empty here: the processor fills them.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import datasets
import PIL.Image
from datasets.exceptions import DatasetGenerationError

from modeling_umgf.schema import dataset_features, empty_grounding
from modeling_umgf.tools.hub import UMGF_CITATION

from .authors_format import AUTHORS_SPLIT_FOLDERS, read_authors_split
from .umt_format import RawTweet, TwitterFormatError, read_umt_file

logger = datasets.utils.logging.get_logger(__name__)

UMT_HOMEPAGE = "https://github.com/jefferyYu/UMT"
UMT_DATA_URL = "https://raw.githubusercontent.com/jefferyYu/UMT/master/data"
UMT_IMAGES_URL = "https://drive.google.com/file/d/1PpvvncnQkgDNeBMKVgG2zFYuRhbL873g/view"
IMAGE_SUFFIX = ".jpg"
SPLIT_FILES: dict[str, str] = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}
AUTHORS_HOMEPAGE = "https://github.com/TransformersWsz/UMGF"
AUTHORS_COMMIT = "55adc07633ebf728825d06db21b18880d93c1563"
#: Their repository at a fixed commit; it unpacks to ``UMGF-<commit>/my_data/<dataset>/<split>/``.
AUTHORS_ARCHIVE_URL = f"{AUTHORS_HOMEPAGE}/archive/{AUTHORS_COMMIT}.tar.gz"

IMAGE_INSTRUCTIONS = f"""\
The tweet images are not downloadable by script (Google Drive archive of the UMT release):
  1. download the archive from {UMT_IMAGES_URL}
  2. unpack it; it holds one folder of <IMGID>.jpg files per dataset (twitter2015_images, twitter2017_images)
  3. pass those folders as image_dir (CLI: --image_dir_2015 / --image_dir_2017).
Using the images means accepting Twitter's terms and those of the dataset providers."""

LICENSE_NOTE = (
    "Tweets and images are subject to the Twitter/X Terms of Service and to the terms set by the dataset "
    "providers (Zhang et al. 2018; Lu et al. 2018; Yu et al. 2020); research use only, no redistribution "
    "beyond those terms."
)

LICENSE_NAME = "twitter-mner-research-only"
"""Id of the licence for the dataset card's ``license: other`` (the terms of ``LICENSE_NOTE``)."""
LICENSE_LINK = "https://x.com/en/tos"
"""The Twitter/X Terms of Service, which the tweets and images are subject to."""

CITATION = (
    """\
@inproceedings{zhang2018adaptive,
  title = {Adaptive Co-attention Network for Named Entity Recognition in Tweets},
  author = {Zhang, Qi and Fu, Jinlan and Liu, Xiaoyu and Huang, Xuanjing},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},
  year = {2018}
}
@inproceedings{lu2018visual,
  title = {Visual Attention Model for Name Tagging in Multimodal Social Media},
  author = {Lu, Di and Neves, Leonardo and Carvalho, Vitor and Zhang, Ning and Ji, Heng},
  booktitle = {Proceedings of the 56th Annual Meeting of the Association for Computational Linguistics},
  year = {2018}
}
@inproceedings{yu2020improving,
  title = {Improving Multimodal Named Entity Recognition via Entity Span Detection with Unified Multimodal Transformer},
  author = {Yu, Jianfei and Jiang, Jing and Yang, Li and Xia, Rui},
  booktitle = {Proceedings of the 58th Annual Meeting of the Association for Computational Linguistics},
  year = {2020}
}
"""
    + UMGF_CITATION
)

FEATURES = dataset_features()
"""Columns of every config (CONTRACT.md "Dataset columns")."""

EMPTY_GROUNDING: dict[str, Any] = empty_grounding()


class EmptySplitError(ValueError):
    """A split of twitter2017c has no tweet with a usable image."""


class ImageStatus(Enum):
    """What was found at ``<image_dir>/<IMGID>.jpg``."""

    FOUND = "found"
    MISSING = "missing"
    UNREADABLE = "unreadable"
    BLANK = "blank placeholder"


@dataclass
class ImageReport:
    """Per-split image accounting; the ``*_ids`` lists keep the image ids in file order.

    ``dropped`` counts the tweets left out of the split for lack of an image (twitter2017c).
    """

    image_dir: str | None
    tweets: int = 0
    found: int = 0
    missing_ids: list[str] = field(default_factory=list)
    unreadable_ids: list[str] = field(default_factory=list)
    blank_ids: list[str] = field(default_factory=list)
    dropped: int = 0

    def record(self, image_id: str, status: ImageStatus | None) -> None:
        """Count one tweet; ``status`` is None when no image folder was given."""
        self.tweets += 1
        if status is ImageStatus.FOUND:
            self.found += 1
        elif status is not None:
            {
                ImageStatus.MISSING: self.missing_ids,
                ImageStatus.UNREADABLE: self.unreadable_ids,
                ImageStatus.BLANK: self.blank_ids,
            }[status].append(image_id)

    def summary(self) -> str:
        """One line for logs and the dataset card."""
        if self.image_dir is None:
            return f"{self.tweets} tweets, no image folder given: image is null for all"
        summary = (
            f"{self.tweets} tweets: {self.found} images found, {len(self.missing_ids)} missing, "
            f"{len(self.unreadable_ids)} unreadable, {len(self.blank_ids)} blank placeholders"
        )
        return f"{summary}; {self.dropped} tweets dropped" if self.dropped else summary


def load_image(image_dir: Path, image_id: str) -> tuple[ImageStatus, dict[str, Any] | None]:
    """Read and fully decode ``<image_dir>/<image_id>.jpg``.

    Returns:
        The status and, when FOUND, the ``datasets.Image`` value ``{"bytes": ..., "path": None}`` (bytes
        embedded and no path, so the built dataset does not depend on the folder nor on the working directory).
    """
    path = image_dir / f"{image_id}{IMAGE_SUFFIX}"
    if not path.is_file():
        return ImageStatus.MISSING, None
    try:
        data = path.read_bytes()
        with PIL.Image.open(io.BytesIO(data)) as image:
            extrema = image.getextrema()  # decodes every pixel: truncated files fail here
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
        logger.info(f"unreadable image {path}: {error}")
        return ImageStatus.UNREADABLE, None
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    if all(low == high for low, high in bands):
        return ImageStatus.BLANK, None
    return ImageStatus.FOUND, {"bytes": data, "path": None}


@dataclass
class TwitterMNERConfig(datasets.BuilderConfig):
    """Config of :class:`TwitterMNER`.

    Attributes:
        source: folder of the UMT release holding the text ("twitter2015" or "twitter2017").
        image_dir: folder of ``<IMGID>.jpg`` files; None builds without images.
        drop_tweets_without_image: drop tweets whose image is missing, unreadable or blank (2017c).
        layout: "umt" (the UMT release files) or "authors" (the UMGF authors' ``my_data/`` folders).
    """

    source: str = "twitter2015"
    image_dir: str | None = None
    drop_tweets_without_image: bool = False
    layout: str = "umt"


class TwitterMNER(datasets.GeneratorBasedBuilder):
    """Builder of the ``twitter2015``, ``twitter2017`` and ``twitter2017c`` configs.

    Example::

        builder = TwitterMNER(config_name="twitter2017c", data_dir="data", image_dir="twitter2017_images")
        builder.download_and_prepare()
        dataset_dict = builder.as_dataset()

    ``data_dir`` is the UMT ``data/`` folder (``<data_dir>/<source>/{train,valid,test}.txt``), or for the
    ``*_authors`` configs the authors' ``my_data/`` folder (``<data_dir>/<source>/{train,valid,test}/<n>_s.txt``
    ...); without it the files are downloaded from GitHub.

    Attributes:
        image_reports: split name -> :class:`ImageReport`, filled when a split is generated (not when it
            is read back from the cache; :func:`build_dataset` always generates).
    """

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = TwitterMNERConfig
    BUILDER_CONFIGS = [
        TwitterMNERConfig(
            name="twitter2015", version=VERSION, source="twitter2015", description="Twitter-2015 (Zhang et al. 2018)."
        ),
        TwitterMNERConfig(
            name="twitter2017", version=VERSION, source="twitter2017", description="Twitter-2017 (Lu et al. 2018)."
        ),
        TwitterMNERConfig(
            name="twitter2017c",
            version=VERSION,
            source="twitter2017",
            drop_tweets_without_image=True,
            description="Twitter-2017 without the tweets whose image is missing (Zhang et al. 2021).",
        ),
        TwitterMNERConfig(
            name="twitter2015_authors",
            version=VERSION,
            source="twitter2015",
            layout="authors",
            description="Twitter-2015 as the UMGF authors' code reads it (their my_data/ text, their order).",
        ),
        TwitterMNERConfig(
            name="twitter2017_authors",
            version=VERSION,
            source="twitter2017",
            layout="authors",
            description="Twitter-2017 as the UMGF authors' code reads it (their my_data/ text, their order).",
        ),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.image_reports: dict[str, ImageReport] = {}

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=self.config.description,
            features=FEATURES,
            homepage=UMT_HOMEPAGE,
            citation=CITATION,
            license=LICENSE_NOTE,
        )

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        image_dir = self._image_dir()
        if self.config.layout == "authors":
            if self.config.data_dir:
                root = Path(self.config.data_dir, self.config.source)
            else:
                root = Path(dl_manager.download_and_extract(AUTHORS_ARCHIVE_URL))
                root = root / f"UMGF-{AUTHORS_COMMIT}" / "my_data" / self.config.source
            folders = {split: root / name for split, name in AUTHORS_SPLIT_FOLDERS.items()}
            for folder in folders.values():
                if not folder.is_dir():
                    raise FileNotFoundError(
                        f"{folder} not found: data_dir must be the authors' my_data/ folder, holding "
                        f"{self.config.source}/{{train,valid,test}}/<n>_s.txt, <n>_l.txt, <n>_p.txt"
                    )
            return [
                datasets.SplitGenerator(name=split, gen_kwargs={"path": folder, "split": split, "image_dir": image_dir})
                for split, folder in folders.items()
            ]
        if self.config.data_dir:
            files = {split: Path(self.config.data_dir, self.config.source, name) for split, name in SPLIT_FILES.items()}
            for path in files.values():
                if not path.is_file():
                    raise FileNotFoundError(
                        f"{path} not found: data_dir must be the UMT data/ folder, holding "
                        f"{self.config.source}/{{train,valid,test}}.txt"
                    )
        else:
            files = dl_manager.download(
                {split: f"{UMT_DATA_URL}/{self.config.source}/{name}" for split, name in SPLIT_FILES.items()}
            )
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"path": path, "split": split, "image_dir": image_dir})
            for split, path in files.items()
        ]

    def _image_dir(self) -> Path | None:
        if self.config.image_dir is None:
            if self.config.drop_tweets_without_image:
                raise ValueError(
                    f"{self.config.name} cannot be built without an image folder: it is {self.config.source} "
                    f"minus the tweets whose image is missing, unreadable or blank, and without the images "
                    f"every tweet would count as such.\n{IMAGE_INSTRUCTIONS}"
                )
            logger.warning(
                f"No image folder for {self.config.name}: the image column will be null.\n{IMAGE_INSTRUCTIONS}"
            )
            return None
        image_dir = Path(self.config.image_dir)
        if not image_dir.is_dir():
            raise FileNotFoundError(f"image folder {image_dir} does not exist.\n{IMAGE_INSTRUCTIONS}")
        return image_dir

    def _generate_examples(
        self, path: str | Path, split: str, image_dir: Path | None
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        report = self.image_reports[split] = ImageReport(image_dir=None if image_dir is None else str(image_dir))
        tweets: Iterator[tuple[str, RawTweet]] = (
            read_authors_split(path)
            if self.config.layout == "authors"
            else ((str(tweet.index), tweet) for tweet in read_umt_file(path))
        )
        for sample_id, tweet in tweets:
            status, image = load_image(image_dir, tweet.image_id) if image_dir else (None, None)
            report.record(tweet.image_id, status)
            if image is None and self.config.drop_tweets_without_image:
                report.dropped += 1
                continue
            yield (
                tweet.index,
                {
                    "id": sample_id,
                    "image_id": tweet.image_id,
                    "tokens": tweet.tokens,
                    "ner_tags": tweet.tags,
                    "image": image,
                    **EMPTY_GROUNDING,
                },
            )
        if self.config.drop_tweets_without_image and report.dropped == report.tweets:
            raise EmptySplitError(
                f"{self.config.name} {split}: none of the {report.tweets} tweets of {path} has a usable image in "
                f"{image_dir} ({report.summary()}); is it the {self.config.source} image folder?"
            )
        logger.info(f"{self.config.name} {split}: {report.summary()}")


def build_dataset(
    config_name: str,
    data_dir: str | os.PathLike[str] | None = None,
    image_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[datasets.DatasetDict, dict[str, ImageReport]]:
    """Build one config and return it with its per-split image reports.

    The dataset is always generated afresh (downloads are reused), so the reports are complete.

    Args:
        config_name: "twitter2015", "twitter2017", "twitter2017c", "twitter2015_authors" or "twitter2017_authors".
        data_dir: the UMT ``data/`` folder (the authors' ``my_data/`` folder for the ``*_authors`` configs); None
            downloads the text from GitHub.
        image_dir: folder of ``<IMGID>.jpg`` files (required for twitter2017c).
        cache_dir: ``datasets`` cache folder (default: the Hugging Face cache).

    Raises:
        TwitterFormatError: a release file breaks the format (unwrapped from ``datasets``'
            ``DatasetGenerationError`` so the message names the file and line).
        EmptySplitError: twitter2017c would have a split without tweets (unwrapped the same way).
        FileNotFoundError: a release file or the image folder does not exist.
        ValueError: twitter2017c without ``image_dir``.
    """
    builder = TwitterMNER(
        config_name=config_name,
        data_dir=None if data_dir is None else str(data_dir),
        image_dir=None if image_dir is None else str(image_dir),
        cache_dir=None if cache_dir is None else str(cache_dir),
    )
    try:
        builder.download_and_prepare(download_mode=datasets.DownloadMode.REUSE_CACHE_IF_EXISTS)
    except DatasetGenerationError as error:
        if isinstance(error.__cause__, (TwitterFormatError, EmptySplitError)):
            raise error.__cause__ from None
        raise
    return builder.as_dataset(), builder.image_reports
