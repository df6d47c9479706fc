"""Label Studio credentials: from the environment or a generated secret file, never shown."""

import os
import stat

import pytest

from annotation.settings import AnnotationSettings, credentials
from ardrag.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("ARDRAG_LS_TOKEN", "ARDRAG_LS_PASSWORD", "ARDRAG_LS_USERNAME"):
        monkeypatch.delenv(name, raising=False)


def test_generated_once_kept_private_and_reused(tmp_path):
    settings = AnnotationSettings(data_dir=tmp_path)
    with pytest.raises(ConfigError, match="no Label Studio token"):
        credentials(settings)
    first = credentials(settings, create=True)
    assert len(first.token) == 40 and first.password
    assert stat.S_IMODE(os.stat(settings.credentials_file).st_mode) == 0o600
    assert credentials(settings) == first and credentials(settings, create=True) == first
    assert first.token not in repr(first) and first.password not in repr(first)


def test_environment_wins_and_a_missing_password_is_generated_and_kept(tmp_path, monkeypatch):
    settings = AnnotationSettings(data_dir=tmp_path)
    monkeypatch.setenv("ARDRAG_LS_TOKEN", "t" * 40)
    made = credentials(settings, create=True)
    assert made.token == "t" * 40
    assert credentials(settings).password == made.password  # the server's password is not lost
    assert "t" * 40 not in settings.credentials_file.read_text()  # a given token is not copied
    monkeypatch.setenv("ARDRAG_LS_TOKEN", "t" * 41)
    with pytest.raises(ConfigError, match="41 characters"):
        credentials(settings)
