"""Readers of tracked runs the notebooks use: a dataset's runs across experiments, validation curves."""

from __future__ import annotations

from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from recsys.tracking.mlflow import dataset_runs, validation_curve


def test_dataset_runs_and_validation_curve(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    ids = {}
    for experiment, dataset in (("a", "beauty"), ("b", "beauty"), ("c", "sports")):
        exp_id = client.create_experiment(experiment, artifact_location=(tmp_path / experiment).as_uri())
        run = client.create_run(exp_id, tags={"dataset": dataset, "command": "python -m pipelines.train"})
        client.log_param(run.info.run_id, "model.name", "sasrec")
        ids[experiment] = run.info.run_id
    # a fit: two checks logged with `epoch` in one batch each; then the final (best) value at step = epochs
    rid = ids["a"]
    for step, epoch, value, ts in ((9, 0, 0.1, 1000), (19, 1, 0.3, 2000)):
        client.log_batch(rid, metrics=[Metric("val/ndcg_at_10", value, ts, step), Metric("epoch", epoch, ts, step)])
    client.log_batch(rid, metrics=[Metric("val/ndcg_at_10", 0.3, 3000, 2), Metric("test/ndcg_at_10", 0.2, 3000, 2)])
    for run_id in ids.values():
        client.set_terminated(run_id)
    client.create_run(client.get_experiment_by_name("a").experiment_id, tags={"dataset": "beauty"})  # still running

    runs = dataset_runs(uri, "beauty")
    assert sorted(runs["run_id"].to_list()) == sorted([ids["a"], ids["b"]])
    assert set(runs["experiment"].to_list()) == {"a", "b"}
    row = runs.filter(runs["run_id"] == rid).row(0, named=True)
    assert row["param:model.name"] == "sasrec" and row["tag:command"] == "python -m pipelines.train"
    assert row["test/ndcg@10"] == 0.2
    assert dataset_runs(uri, "yelp").height == 0

    curve = validation_curve(uri, rid)
    assert curve.to_dicts() == [
        {"epochs_trained": 1, "step": 9, "value": 0.1},
        {"epochs_trained": 2, "step": 19, "value": 0.3},
    ]
