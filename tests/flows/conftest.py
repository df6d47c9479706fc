import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_home(tmp_path_factory):
    """Keep Prefect's database, results and settings of the test run out of the user's home."""
    home = tmp_path_factory.mktemp("prefect-home")
    old = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("PREFECT_HOME", None)
    else:
        os.environ["PREFECT_HOME"] = old
