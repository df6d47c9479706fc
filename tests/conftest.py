"""Shared fixtures."""

import pytest
from factories import make_sample

from ardrag.data.sample import Sample


@pytest.fixture
def sample() -> Sample:
    return make_sample()
