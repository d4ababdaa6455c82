"""Twitter-2015 / Twitter-2017 / Twitter-2017c multimodal NER datasets for umgf.

Modules: :mod:`.umt_format` (strict reader of the UMT release text), :mod:`.twitter_mner` (the
``datasets`` builder and image checks), :mod:`.statistics` (the paper's Table 1), :mod:`.hub_layout`
(Parquet + dataset card + Hub upload), :mod:`.output_folder` (output folders checked first, replaced only on
success) and :mod:`.cli` (``python -m datasets_scripts build|stats``).
"""

from .twitter_mner import FEATURES, EmptySplitError, ImageReport, TwitterMNER, build_dataset
from .umt_format import TwitterFormatError

__all__ = ["FEATURES", "EmptySplitError", "ImageReport", "TwitterFormatError", "TwitterMNER", "build_dataset"]
