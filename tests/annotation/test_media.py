"""The media folder Label Studio serves holds folders and regular files only: writing refuses a symlink,
and push refuses to publish while the folder holds one."""

import os
import stat

import pytest
from factories import HARD_CASES

from annotation.media import MediaError, check_media_folder, media_folder, write_media
from annotation.push import dataset_name, push
from annotation.settings import AnnotationSettings, credentials
from ardrag.curation.pipeline import CurationConfig, run_local


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "credentials.json"
    path.write_text('{"token": "not for the browser"}')
    return path


def test_media_is_written_once_as_a_regular_file(tmp_path):
    path = write_media(tmp_path / "verify", "a.mp4", b"first")
    assert stat.S_ISREG(os.lstat(path).st_mode) and path.read_bytes() == b"first"
    assert write_media(tmp_path / "verify", "a.mp4", b"second") == path
    assert path.read_bytes() == b"first"  # named by version: never rewritten
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.mp4"]  # no temporary file left


def test_a_symlink_where_media_goes_is_refused_and_its_target_untouched(tmp_path, secret):
    folder = media_folder(tmp_path, "ds", "verify")
    (folder / "a.mp4").symlink_to(secret)
    with pytest.raises(MediaError) as err:
        write_media(folder, "a.mp4", b"video")
    message = str(err.value)
    assert str(folder / "a.mp4") in message and f"a symlink to {secret}" in message
    assert "remove it and push again" in message
    assert secret.read_text() == '{"token": "not for the browser"}'


def test_a_link_in_place_of_the_temporary_file_is_replaced_not_followed(tmp_path, secret):
    (tmp_path / ".a.mp4.partial").symlink_to(secret)
    path = write_media(tmp_path, "a.mp4", b"video")
    assert path.read_bytes() == b"video" and not (tmp_path / ".a.mp4.partial").exists()
    assert secret.read_text() == '{"token": "not for the browser"}'


def test_a_linked_folder_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "ds").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(MediaError, match=r"media/ds is a symlink to .*elsewhere"):
        media_folder(tmp_path / "media", "ds", "verify")
    assert not (tmp_path / "elsewhere" / "verify").exists()


def test_the_folder_check_finds_a_link_at_any_depth_and_counts_files(tmp_path, secret):
    media = tmp_path / "media"
    write_media(media / "ds" / "verify", "a.mp4", b"1")
    write_media(media / "ds" / "annotate", "b.mp4", b"2")
    assert check_media_folder(media) == 2
    (media / "ds" / "annotate" / "c.mp4").symlink_to(secret)
    with pytest.raises(MediaError, match=r"annotate/c\.mp4 is a symlink"):
        check_media_folder(media)
    (media / "ds" / "annotate" / "c.mp4").unlink()
    (media / "ds" / "linked").symlink_to(media / "ds" / "verify")  # a linked folder too
    with pytest.raises(MediaError, match=r"ds/linked is a symlink"):
        check_media_folder(media)


@pytest.mark.slow
def test_push_refuses_to_publish_while_the_media_folder_holds_a_symlink(tmp_path, monkeypatch):
    from ardrag.data.sources import build_source

    out = tmp_path / "queue"
    source = build_source("procedural", {"num_clips": 2, "num_frames": 25, "seed": 1, **HARD_CASES})
    run_local(source, out, CurationConfig(), progress=False)
    monkeypatch.delenv("ARDRAG_LS_TOKEN", raising=False)
    settings = AnnotationSettings(data_dir=tmp_path / "data", url="http://127.0.0.1:9", attempts=1)
    creds = credentials(settings, create=True)
    link = media_folder(settings.media_root, dataset_name(out), "verify") / "planted.mp4"
    link.symlink_to(settings.credentials_file)
    with pytest.raises(MediaError) as err:  # before any request: port 9 would fail differently
        push(out, settings, progress=False)
    assert str(link) in str(err.value) and creds.token not in str(err.value)
