"""docker-compose's Label Studio matches `ardrag annotate serve`: pinned, loopback, no secret inside."""

from pathlib import Path

import yaml

from annotation.server import OVERLAY_DIR, server_environment
from annotation.settings import LABEL_STUDIO_VERSION, AnnotationSettings, Credentials

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def test_compose_label_studio_is_pinned_loopback_and_secret_free():
    service = yaml.safe_load(COMPOSE.read_text())["services"]["label-studio"]
    assert service["image"].endswith(f":{LABEL_STUDIO_VERSION}")
    assert all(port.startswith("127.0.0.1:") for port in service["ports"])
    env = service["environment"]
    for name in ("LABEL_STUDIO_USER_TOKEN", "LABEL_STUDIO_PASSWORD"):
        assert env[name].startswith("${") and ":?" in env[name]  # from the environment, required
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert env["LOCAL_FILES_DOCUMENT_ROOT"] == "/ardrag/media"
    assert any(v.endswith(":/ardrag/media:ro") for v in service["volumes"])


def test_compose_label_studio_runs_with_the_local_servers_guards(tmp_path):
    service = yaml.safe_load(COMPOSE.read_text())["services"]["label-studio"]
    env = service["environment"]
    local = server_environment(AnnotationSettings(data_dir=tmp_path), Credentials("u", "p", "t", "k"))
    for name in ("DJANGO_SETTINGS_MODULE", "DEBUG", "DEBUG_MODAL_EXCEPTIONS", "LOCAL_FILES_SERVING_ENABLED"):
        assert env[name] == local[name], name  # the same settings as `ardrag annotate serve`
    mounts = {v.split(":")[1]: v.split(":") for v in service["volumes"]}
    source, _, mode = mounts[env["PYTHONPATH"]]
    assert mode == "ro" and (ROOT / source).resolve() == OVERLAY_DIR
    assert (OVERLAY_DIR / f"{env['DJANGO_SETTINGS_MODULE']}.py").is_file()
    assert (
        env["ARDRAG_LS_BASE_SETTINGS"] == "core.settings.label_studio"
    )  # the image's DJANGO_SETTINGS_MODULE
    assert "SECRET_KEY" not in env  # empty, it would stop Label Studio reading the key it keeps in its volume
