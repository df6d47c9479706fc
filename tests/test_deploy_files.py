"""The deployment files: docker-compose.yml against the Compose specification's JSON schema (the one
check-jsonschema ships), its secrets kept out of it; prefect.yaml's deployments, parameters and trigger
checked with Prefect's own models and its server's event matching."""

import datetime as dt
import importlib
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from ardrag.config import repo_root
from ardrag.retrain.config import RetrainConfig, train_config, training_chain

ROOT = repo_root()
CHECK = str(Path(sys.executable).with_name("check-jsonschema"))


def validate_compose(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHECK, "--builtin-schema", "vendor.compose-spec", str(path)], capture_output=True,
                          text=True)  # fmt: skip


def test_compose_file_validates_against_the_compose_spec_schema():
    done = validate_compose(ROOT / "docker-compose.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_rejects_a_broken_compose_file(tmp_path):
    text = (ROOT / "docker-compose.yml").read_text()
    for broken in (
        text.replace("    healthcheck:\n      test: [\"CMD-SHELL\", \"pg_isready -U prefect -d prefect\"]",
                     "    healthcheck:\n      test: [\"CMD-SHELL\", \"pg_isready\"]\n      retrys: 3", 1),
        text.replace("  prefect-db:\n    image: postgres:16-alpine", "  prefect-db:\n    image: [pg]", 1),
    ):  # fmt: skip
        assert broken != text
        path = tmp_path / "docker-compose.yml"
        path.write_text(broken)
        assert validate_compose(path).returncode != 0


def test_compose_services_healthchecks_and_secrets():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    wanted = {"prefect-db", "prefect-server", "worker-cpu", "worker-gpu", "label-studio", "label-studio-db"}
    assert wanted <= set(services)
    for name, service in services.items():
        if name != "prefect-setup":  # a one-shot job
            assert "healthcheck" in service, name
    assert services["worker-cpu"]["build"]["dockerfile"] == "Dockerfile" and (ROOT / "Dockerfile").is_file()
    assert services["label-studio"]["environment"]["POSTGRE_HOST"] == "label-studio-db"  # its own database
    assert "prefect-db" in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    # secrets: required from the environment (.env, untracked), listed in the committed example
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert {"PREFECT_DB_PASSWORD", "LS_DB_PASSWORD", "ARDRAG_LS_PASSWORD", "ARDRAG_LS_TOKEN"} <= required
    example = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))  # fmt: skip
    assert required <= set(example)
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    tracked = subprocess.run(["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True).stdout
    assert tracked.strip() == ""


def deployments() -> list[dict]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


@pytest.mark.parametrize("deployment", deployments(), ids=lambda d: d["name"])
def test_each_deployment_names_a_flow_whose_parameters_it_fills(deployment):
    from prefect import Flow

    module, name = deployment["entrypoint"].split(":")
    flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)
    assert isinstance(flow, Flow)
    flow.validate_parameters(deployment.get("parameters", {}))  # raises on unknown or ill-typed parameters
    assert deployment["work_pool"]["name"] in ("cpu", "gpu")


def test_the_retrain_deployment_config_resolves_for_every_stage():
    (retrain,) = [d for d in deployments() if d["entrypoint"] == "flows/retrain.py:retrain"]
    config = RetrainConfig.model_validate(retrain["parameters"]["config"])
    assert config.annotation == "label-studio" and config.curation_dir == Path("/data/curation/real")
    for stage in training_chain(config):
        tc = train_config(config, stage, "/data/curation/real/dataset", None)
        assert tc.stage == stage and tc.model.wan.startswith("/data/weights")
    assert retrain["work_pool"]["name"] == "gpu" and retrain["concurrency_limit"]["limit"] == 1


def test_the_retrain_trigger_fires_on_new_versions_of_its_dataset_from_curation_and_annotation_only():
    from prefect.events import DeploymentTriggerTypes
    from prefect.server.events.schemas.automations import EventTrigger
    from prefect.server.events.schemas.events import ReceivedEvent
    from pydantic import TypeAdapter

    from flows.events import DATASET_EVENT, dataset_resource

    (retrain,) = [d for d in deployments() if d["entrypoint"] == "flows/retrain.py:retrain"]
    (spec,) = retrain["triggers"]
    trigger = TypeAdapter(DeploymentTriggerTypes).validate_python(spec)  # as `prefect deploy` reads it
    fields = ("match", "match_related", "after", "expect", "for_each", "posture", "threshold", "within")
    server_side = EventTrigger.model_validate(
        {
            k: v.model_dump() if hasattr(v, "model_dump") else v
            for k, v in ((f, getattr(trigger, f)) for f in fields)
        }
    )

    def event(dataset: str, producer: str, name: str = DATASET_EVENT) -> ReceivedEvent:
        return ReceivedEvent(occurred=dt.datetime.now(dt.UTC), event=name, id=uuid.uuid4(),
                             resource=dataset_resource(dataset, "0123abcd", producer))  # fmt: skip

    real = config_dataset = "/data/curation/real/dataset"
    assert RetrainConfig.model_validate(retrain["parameters"]["config"]).curation_dir / "dataset" == Path(
        config_dataset
    )
    assert server_side.covers(event(real, "curate"))
    assert server_side.covers(event(real, "annotation-pull"))
    assert not server_side.covers(event(real, "retrain"))  # a retrain run does not start another
    assert not server_side.covers(event("/data/curation/synthetic/dataset", "curate"))
    assert not server_side.covers(event(real, "curate", name="ardrag.dataset.deleted"))
    assert set(spec["parameters"]) <= set(
        importlib.import_module("flows.retrain").retrain.parameters.properties
    )
