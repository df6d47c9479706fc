"""docker-compose's Label Studio matches `ardrag annotate serve`: pinned, loopback, no secret inside."""

from pathlib import Path

import yaml

from annotation.settings import LABEL_STUDIO_VERSION

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


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
