"""Shared fixtures."""

import pytest
from factories import make_sample

from ardrag.data.sample import Sample

pytest_plugins = ["ls_fixtures"]  # a real Label Studio server, started on first use


@pytest.fixture
def sample() -> Sample:
    return make_sample()
