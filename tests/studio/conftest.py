"""Fixtures of the studio tests: the tiny pipeline, shared, and a server on it."""

import pytest
from studio_helpers import Server

from ardrag.inference.generate import load_pipeline
from ardrag.presets import TINY


@pytest.fixture(scope="package")
def tiny_pipe():
    return load_pipeline(TINY, None, "unused", 0, "cpu")


@pytest.fixture
def server(tiny_pipe):
    s = Server(tiny_pipe)
    yield s
    s.stop()
