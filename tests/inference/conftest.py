"""Shared fixtures of the streaming tests: the tiny pipeline and a random 96x64 reference image (a test
module may define its own, e.g. with trained-looking control weights)."""

import numpy as np
import pytest

from ardrag.model.pipeline import ARDragPipeline


@pytest.fixture(scope="module")
def pipe():
    return ARDragPipeline.tiny()


@pytest.fixture(scope="module")
def reference():
    return (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)
