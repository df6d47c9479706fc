"""Label Studio credentials: from the environment or a generated secret file, never shown."""

import json
import os
import stat

import pytest

from annotation.settings import AnnotationSettings, credentials
from ardrag.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("ARDRAG_LS_TOKEN", "ARDRAG_LS_PASSWORD", "ARDRAG_LS_USERNAME", "ARDRAG_LS_SECRET_KEY"):
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


def test_the_server_secret_key_is_generated_once_kept_private_and_added_to_an_older_file(tmp_path):
    settings = AnnotationSettings(data_dir=tmp_path)
    path = settings.credentials_file
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"username": "a@b.c", "password": "p" * 12, "token": "t" * 40}))
    path.chmod(0o644)  # as an older ardrag, or a careless copy, left it
    assert credentials(settings).secret_key == ""  # reading alone writes nothing
    made = credentials(settings, create=True)  # the server starting
    assert len(made.secret_key) >= 50 and made.token == "t" * 40 and made.password == "p" * 12
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text())["secret_key"] == made.secret_key
    assert credentials(settings, create=True).secret_key == made.secret_key  # kept, not regenerated
    assert made.secret_key not in repr(made) and "secret_key=***" in repr(made)


def test_a_secret_key_from_the_environment_wins_and_is_not_copied(tmp_path, monkeypatch):
    settings = AnnotationSettings(data_dir=tmp_path)
    monkeypatch.setenv("ARDRAG_LS_SECRET_KEY", "k" * 60)
    assert credentials(settings, create=True).secret_key == "k" * 60
    assert "k" * 60 not in settings.credentials_file.read_text()
