"""What the real Label Studio server, as ardrag starts it, serves from the media folder: its regular
files, and nothing through a traversal, an encoded traversal, a symlink or a linked folder, with no
absolute path in any answer."""

import re
import time
import uuid

import httpx
import pytest

from annotation.client import Client
from annotation.media import media_folder, write_media
from annotation.push import project_title
from annotation.settings import credentials

pytestmark = pytest.mark.slow

CLIP = b"\x00\x00\x00\x18ftypisom" + b"ardrag local-files test clip"
ABSOLUTE = re.compile(r"(^|[^\w.])/(tmp|home|root|etc|work|usr|var|proc)/")


@pytest.fixture(scope="module")
def media(ls_settings, ls_server):
    """A project whose local-files storage covers ``media/guard``, one real clip in it, and two links
    planted there (as a careless person or another program might): one to the secret file, one to the
    folder that holds it."""
    name = "guard"
    folder = media_folder(ls_settings.media_root, name, "verify")  # the storage's folder must exist
    storage = f"{ls_settings.server_media_root}/{name}"
    project = Client(ls_settings).ensure_project(project_title(name, "verify"), "verify", storage)
    write_media(folder, "real.mp4", CLIP)
    links = [folder / "link.mp4", folder.parent / "linked"]
    links[0].symlink_to(ls_settings.credentials_file)
    links[1].symlink_to(ls_settings.credentials_file.parent, target_is_directory=True)
    yield {"project": project.id}
    for link in links:  # the other tests' push checks the whole media folder of their own dataset only
        link.unlink()


def get(ls_settings, token, path_and_query):
    headers = {"Authorization": f"Token {token}"}
    return httpx.get(ls_settings.url + path_and_query, headers=headers, timeout=30)


def test_a_regular_file_in_the_storage_is_served(media, ls_settings, ls_token):
    r = get(ls_settings, ls_token, "/data/local-files/?d=guard/verify/real.mp4")
    assert r.status_code == 200 and r.content == CLIP  # the control: files are served, so a refusal counts


@pytest.mark.parametrize(
    "requested",
    [
        "guard/verify/link.mp4",  # a symlink in the media folder to credentials.json
        "guard/linked/credentials.json",  # a linked folder
        "../label-studio/credentials.json",  # the document root is data/media
        "guard/verify/../../../label-studio/credentials.json",
        "..%2Flabel-studio%2Fcredentials.json",
        "%2e%2e/label-studio/credentials.json",
        "%2E%2E%2Flabel-studio%2Fcredentials.json",
        "%252e%252e%252flabel-studio%252fcredentials.json",  # double encoded
        "....//label-studio/credentials.json",
        "..\\label-studio\\credentials.json",
        "guard/verify/real.mp4%00../../label-studio/credentials.json",
        "../../../../../../etc/passwd",
        "{credentials}",  # absolute: Label Studio reads it below the root
    ],
)
def test_no_request_reads_outside_the_media_folder_or_names_a_path(media, ls_settings, ls_token, requested):
    secret = credentials(ls_settings)
    query = requested.replace("{credentials}", str(ls_settings.credentials_file))
    r = get(ls_settings, ls_token, f"/data/local-files/?d={query}")
    body = r.text
    assert r.status_code == 404, (r.status_code, body[:300])  # Label Studio alone: 200 or 500
    for value in (secret.token, secret.password, secret.secret_key, '"token"', "root:x:0:0"):
        assert value not in body
    for path in (ls_settings.data_dir.resolve(), ls_settings.media_root):
        assert str(path) not in body
    assert not ABSOLUTE.search(body), body[:300]


def test_a_server_error_names_no_path_and_the_log_keeps_it(media, ls_settings, ls_token, ls_server):
    r = get(ls_settings, ls_token, f"/api/projects/{media['project']}/tasks/?page_size=not-a-number")
    assert r.status_code == 500, r.text[:300]  # Label Studio 1.23.2 fails here (int("not-a-number"))
    error = r.json()
    assert error["detail"] == f"internal server error {error['id']}: the server log has the details"
    assert "invalid literal" not in r.text and error["exc_info"] is None
    deadline = time.monotonic() + 10
    while error["id"] not in ls_server.log_path.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.2)
    log = ls_server.log_path.read_text(errors="replace")
    assert error["id"] in log and "invalid literal for int()" in log


def test_each_request_is_logged_once(ls_settings, ls_server):
    marker = uuid.uuid4().hex
    assert httpx.get(f"{ls_settings.url}/health?probe={marker}", timeout=30).status_code == 200
    deadline = time.monotonic() + 10
    while marker not in ls_server.log_path.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # a second copy would follow at once
    lines = [line for line in ls_server.log_path.read_text().splitlines() if marker in line]
    assert len(lines) == 1, lines
    assert f'"GET /health?probe={marker} HTTP/1.1" 200' in lines[0]
