"""Serve the retrain flow as prefect.yaml's retrain deployment, its trigger included, watching the
dataset of the curation folder argv[1] and writing into argv[2] (a tiny config); for
test_retrain_trigger.py. Runs until killed."""

import sys
from pathlib import Path

import yaml
from pydantic import TypeAdapter

from flows.retrain import retrain


def main() -> None:
    curation, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    from prefect.events import DeploymentTriggerTypes

    root = Path(__file__).resolve().parents[2]
    (spec,) = [d for d in yaml.safe_load((root / "prefect.yaml").read_text())["deployments"]
               if d["entrypoint"] == "flows/retrain.py:retrain"]  # fmt: skip
    (trigger,) = spec["triggers"]
    # the production trigger, pointed at this test's dataset
    trigger["match"]["prefect.resource.id"] = f"ardrag.dataset.{curation / 'dataset'}"
    config = {
        "out": str(out), "preset": "tiny", "annotation": "auto", "progress": False,
        "curation": {"dir": str(curation), "source": "procedural", "preset": "tiny",
                     "source_config": {"num_clips": 3}, "config": {"auto_accept": True}},
        "teacher": {"config": {"steps": 1}}, "distill": {"config": {"steps": 1}},
        "grpo": {"config": {"steps": 1}}, "eval": {"procedural": {"num_clips": 1}},
    }  # fmt: skip
    deployment = retrain.to_deployment(
        name=spec["name"],
        parameters={"config": config},
        triggers=[TypeAdapter(DeploymentTriggerTypes).validate_python(trigger)],
    )
    from prefect import serve

    serve(deployment)


if __name__ == "__main__":
    main()
