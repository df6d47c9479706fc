"""End-to-end retraining without Prefect: its config, the keys that decide which stages rerun, the ledger
of finished stages, and the report. ``flows/retrain.py`` runs the stages as Prefect subflows on top.

The modules: :mod:`ardrag.retrain.config` (the retrain config, each training stage's resolved config,
the stages' names in order), :mod:`ardrag.retrain.ledger` (the keys and the ledger),
:mod:`ardrag.retrain.stages` (one function per stage, and the launch of a training run),
:mod:`ardrag.retrain.report` (``report.md``) and :mod:`ardrag.retrain.run` (the order of the stages and
the local runner).

The stages, in order: curation -> annotation -> dataset version -> teacher -> distill -> the RL stages
-> evaluation; the RL stages are the config's ``rl``: grpo, copo, or grpo then copo
(:func:`ardrag.retrain.config.training_chain`), each starting from the export before it. Each stage has
a *key*, a digest of exactly what its result depends on:

- curation: the source and curation settings and every input's content hash;
- annotation: the clips waiting for a person (key and sample version) and the annotation mode;
- dataset: the version of the curated shards (a digest of the accepted samples);
- teacher / distill / grpo / copo: the upstream result (dataset version, or the sha256 of the upstream
  stage's exported weights) and the stage's resolved training config (so another ``rl`` reruns only the
  RL stages whose upstream changed: copo after distill and copo after grpo are different keys);
- evaluation: the final student's weights and the evaluation settings.

A stage whose key equals the one in its ledger entry (``<out>/stages/<stage>.json``, written last,
atomically) is skipped. A training stage's run folder is named by its key, so a killed run resumes from
its checkpoints, and a run with new inputs starts afresh beside the old one (nothing is overwritten).

Every stage is a plain function in :mod:`ardrag.retrain.stages` (``curation_stage`` ...
``evaluation_stage``: key, skip rule, result, summary, figures, notes),
:func:`ardrag.retrain.run.run_stages` holds their order, and :func:`ardrag.retrain.run.run_local` runs
them all in this process. What the library may not import comes in as hooks: the annotation package's
calls (``annotators``, by annotation mode) and the dataset-version event (``on_dataset_version``). The
flow passes its subflows and Prefect's event; the local runner (``ardrag retrain --local``) the plain
calls.
"""
