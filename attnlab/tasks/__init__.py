"""Tasks: clean/corrupted prompt datasets that patching, attribution and circuit analyses run on.

Each task builds a :class:`PatchingDataset` for one model's tokenizer: token-aligned clean and corrupted prompts, the
answer pair whose logit difference is the metric, and the named positions of each prompt.

- :mod:`attnlab.tasks.ioi`: indirect object identification (Wang et al. 2022), with the ABC corruption and the
  S2-swap symmetric token replacement (Zhang & Nanda 2023).
- :mod:`attnlab.tasks.custom`: your own prompts, typed or pasted (:meth:`PatchingDataset.from_prompts`,
  :meth:`PatchingDataset.from_text`), with the alignment and single-token checks explained.
"""

from attnlab.tasks.base import PatchingDataset
from attnlab.tasks.ioi import (
    ABBA_TEMPLATES,
    BABA_TEMPLATES,
    NAMES,
    OBJECTS,
    PLACES,
    ioi_dataset,
    single_token_names,
    single_token_words,
    template_lengths,
)

__all__ = [
    "ABBA_TEMPLATES",
    "BABA_TEMPLATES",
    "NAMES",
    "OBJECTS",
    "PLACES",
    "PatchingDataset",
    "ioi_dataset",
    "single_token_names",
    "single_token_words",
    "template_lengths",
]
