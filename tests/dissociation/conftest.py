"""Fixtures of the dissociation tests: the trained recall-versus-copying toy (see :mod:`tests.dissociation.toy`)."""

from dataclasses import dataclass

import pytest

from attnlab.backends.base import Backend
from attnlab.tasks.recall_reasoning import RecallReasoningItems
from tests.dissociation.toy import toy_items, train_toy


@dataclass(frozen=True)
class PlantedToy:
    model: Backend                 # trained once per session; read-only (no training, no lasting hooks)
    items: RecallReasoningItems    # 24 recall items (every key once) and 40 copying items


@pytest.fixture(scope="session")
def planted_toy() -> PlantedToy:
    """The toy with a planted double dissociation (MLP 0 memorises recall; layer-0 previous-token and layer-1
    induction heads copy), and its items."""
    return PlantedToy(train_toy(), toy_items())
