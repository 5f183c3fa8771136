"""The service's pipeline offline: `python -m pipelines.recommend` and the registered version loaded as an
MLflow pyfunc model (in process and behind `mlflow models serve`) answer what the live service answers
over HTTP for the same queries, with and without a ranking stage; bad input is one line and exit 1."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import polars as pl
import pytest
import torch
from serve_support import MODEL_NAME, N_ITEMS, REPO_ROOT_DIR, ThreadServer, TrainedRun, free_port

from pipelines.recommend import main
from recsys.model_io import save_model
from recsys.registry import build_ranker
from recsys.serve.app import create_app
from recsys.serve.settings import ServeSettings

K = 5
HISTORY = ["it03", "it04", "it05"]
# (user_id, history) queries: stored histories, a history alone, and a user with events appended
QUERIES: list[tuple[str | None, list[str]]] = [
    ("user0", []),
    ("user7", []),
    ("user31", []),
    (None, HISTORY),
    ("user2", ["it30"]),
]

Answer = list[tuple[str, float]]


@pytest.fixture(scope="module")
def ranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained seeded DARE over the served catalog (the order it gives is what is compared)."""
    params: dict[str, Any] = {"d_att": 4, "d_rep": 8, "top_k": 3, "max_len": 8, "mlp": [16]}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_ranker("dare", params, N_ITEMS)
    root = tmp_path_factory.mktemp("ranker") / "dare"
    save_model(model, "dare", params, N_ITEMS, root)
    return root


@pytest.fixture(scope="module")
def ranked_server(trained_run: TrainedRun, registered: str, ranker_dir: Path) -> Iterator[ThreadServer]:
    """The service with the ranking stage at its default top-N."""
    settings = ServeSettings(model_uri=registered, tracking_uri=trained_run.tracking_uri, ranker_uri=str(ranker_dir))
    with ThreadServer(create_app(settings)) as srv:
        yield srv


def _live(url: str, queries: list[tuple[str | None, list[str]]], k: int = K) -> list[Answer]:
    answers = []
    with httpx.Client(base_url=url, timeout=30) as http:
        for user, history in queries:
            body: dict[str, Any] = {"k": k, "history": history, **({"user_id": user} if user else {})}
            resp = http.post("/recommend", json=body)
            assert resp.status_code == 200, resp.text
            answers.append([(it["item_id"], it["score"]) for it in resp.json()["items"]])
    return answers


def _grouped(frame: pl.DataFrame, key: str) -> dict[Any, Answer]:
    """Answers per query from the offline output, checking ranks run 1..n in order."""
    out: dict[Any, Answer] = {}
    for row in frame.iter_rows(named=True):
        answer = out.setdefault(row[key], [])
        assert row["rank"] == len(answer) + 1
        answer.append((row["item_id"], row["score"]))
    return out


def _same(got: Answer, want: Answer) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-4, abs=1e-5)


def _queries_file(path: Path) -> Path:
    pl.DataFrame(
        {"user_id": [u for u, _ in QUERIES], "history": [h for _, h in QUERIES]},
        schema={"user_id": pl.String, "history": pl.List(pl.String)},
    ).write_parquet(path)
    return path


@pytest.mark.parametrize("ranked", [False, True], ids=["retrieval", "with_ranker"])
def test_the_parquet_equals_the_live_service(
    ranked: bool,
    trained_run: TrainedRun,
    registered: str,
    ranker_dir: Path,
    server: ThreadServer,
    ranked_server: ThreadServer,
    tmp_path: Path,
) -> None:
    live = _live((ranked_server if ranked else server).url, QUERIES)
    common = ["--model-uri", registered, "--tracking-uri", trained_run.tracking_uri, "--k", str(K)]
    common += ["--ranker-uri", str(ranker_dir)] if ranked else []
    out = tmp_path / "queries.parquet"
    assert main([*common, "--queries", str(_queries_file(tmp_path / "q.parquet")), "--out", str(out)]) == 0
    frame = pl.read_parquet(out)
    assert frame.columns == ["row", "user_id", "rank", "item_id", "score"]
    by_row = _grouped(frame, "row")
    assert sorted(by_row) == list(range(len(QUERIES)))
    for row, want in enumerate(live):
        _same(by_row[row], want)

    # every user of the model, in chunks of an odd size: each equals the service's answer for that user
    everyone = tmp_path / "all.parquet"
    assert main([*common, "--chunk-size", "7", "--out", str(everyone)]) == 0
    frame = pl.read_parquet(everyone)
    assert frame.columns == ["user_id", "rank", "item_id", "score"]
    by_user = _grouped(frame, "user_id")
    users = sorted(by_user)
    assert len(users) == 48 and frame.height == 48 * K
    live_all = _live((ranked_server if ranked else server).url, [(u, []) for u in users])
    for user, want in zip(users, live_all, strict=True):
        _same(by_user[user], want)


def test_a_csv_of_users_and_of_histories(trained_run: TrainedRun, registered: str, tmp_path: Path) -> None:
    common = ["--model-uri", registered, "--tracking-uri", trained_run.tracking_uri, "--k", "3"]
    users, histories = tmp_path / "users.csv", tmp_path / "histories.csv"
    users.write_text("user_id\nuser1\nuser5\n")
    histories.write_text("history\nit03 it04 it05\n")
    assert main([*common, "--queries", str(users), "--out", str(tmp_path / "u.parquet")]) == 0
    assert main([*common, "--queries", str(histories), "--out", str(tmp_path / "h.parquet")]) == 0
    assert pl.read_parquet(tmp_path / "u.parquet")["user_id"].to_list() == ["user1"] * 3 + ["user5"] * 3
    by_row = pl.read_parquet(tmp_path / "h.parquet")
    assert by_row["row"].to_list() == [0, 0, 0]
    assert not set(by_row["item_id"]) & set(HISTORY)  # the history is masked, as the service does


@pytest.mark.parametrize(
    ("rows", "named"),
    [
        ({"user_id": ["user1", "nobody"]}, "row 1: user_id 'nobody' is not one of the model's users"),
        ({"history": [["it01"], ["it02", "zz-unknown"]]}, "row 1: history item 'zz-unknown' is not in the catalog"),
        ({"history": [["it01"], []]}, "row 1: empty history"),
        ({"items": ["it01"]}, "queries need a 'user_id' or a 'history' column"),
    ],
    ids=["unknown_user", "unknown_item", "empty_history", "no_query_column"],
)
def test_bad_queries_are_one_line_and_nothing_is_written(
    rows: dict[str, list[Any]],
    named: str,
    trained_run: TrainedRun,
    registered: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    queries, out = tmp_path / "q.parquet", tmp_path / "out.parquet"
    pl.DataFrame(rows).write_parquet(queries)
    cmd = ["--model-uri", registered, "--tracking-uri", trained_run.tracking_uri]
    assert main([*cmd, "--queries", str(queries), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {named}"), err
    assert not out.exists() and list(tmp_path.iterdir()) == [queries]


def test_a_missing_alias_exits_1_with_one_line(trained_run: TrainedRun, registered: str, tmp_path: Path) -> None:
    del registered  # the registry exists, the alias does not
    cmd = [sys.executable, "-m", "pipelines.recommend", "--model-uri", f"models:/{MODEL_NAME}@nope"]
    cmd += ["--tracking-uri", trained_run.tracking_uri, "--out", str(tmp_path / "out.parquet")]
    done = subprocess.run(cmd, cwd=REPO_ROOT_DIR, capture_output=True, text=True, timeout=180)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.strip().splitlines() if not line.startswith(("INFO", "WARNING"))]
    assert len(lines) == 1 and lines[0].startswith("error:") and f"models:/{MODEL_NAME}@nope" in lines[0], lines


def _query_frame() -> pd.DataFrame:
    return pd.DataFrame({"user_id": [u for u, _ in QUERIES], "history": [h for _, h in QUERIES]})


def _pyfunc_answers(predictions: pd.DataFrame) -> list[Answer]:
    return [
        [(it, float(s)) for it, s in zip(group["item_id"], group["score"], strict=True)]
        for _, group in predictions.sort_values(["row", "rank"]).groupby("row", sort=True)
    ]


def test_the_registered_version_is_an_mlflow_pyfunc_model(
    trained_run: TrainedRun,
    registered: str,
    ranker_dir: Path,
    server: ThreadServer,
    ranked_server: ThreadServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow.pyfunc
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    # MLflow's own resolution of models:/ URIs, as a user's process has it: this store, whatever an
    # earlier test of the session left in MLflow's process-wide URIs (restored afterwards)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_run.tracking_uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    model = mlflow.pyfunc.load_model(registered)
    got = _pyfunc_answers(model.predict(_query_frame(), params={"k": K}))
    for answer, want in zip(got, _live(server.url, QUERIES), strict=True):
        _same(answer, want)
    assert len(model.predict(pd.DataFrame({"user_id": ["user1"]}))) == 10  # the service's default k
    assert len(model.predict(pd.DataFrame({"user_id": ["user1", "user2"], "k": [3, 3]}))) == 6

    # the ranking stage, as the service's settings name it
    ranked = mlflow.pyfunc.load_model(registered, model_config={"ranker_uri": str(ranker_dir)})
    got = _pyfunc_answers(ranked.predict(_query_frame(), params={"k": K}))
    for answer, want in zip(got, _live(ranked_server.url, QUERIES), strict=True):
        _same(answer, want)
    with pytest.raises(Exception, match="user_id 'nobody'"):
        model.predict(pd.DataFrame({"user_id": ["nobody"]}))


def test_mlflow_models_serve_answers_like_the_service(
    trained_run: TrainedRun, registered: str, server: ThreadServer, tmp_path: Path
) -> None:
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": trained_run.tracking_uri, "PYTHONPATH": str(REPO_ROOT_DIR)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # its uvicorn, as in the venv
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", registered, "--env-manager", "local"]
    log = (tmp_path / "mlflow-serve.log").open("w")
    proc = subprocess.Popen(
        [*cmd, "-h", "127.0.0.1", "-p", str(port)], cwd=REPO_ROOT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ping(url, proc, tmp_path / "mlflow-serve.log")
        body = {
            "dataframe_split": {"columns": ["user_id", "history"], "data": [[u, h] for u, h in QUERIES]},
            "params": {"k": K},
        }
        resp = httpx.post(f"{url}/invocations", json=body, timeout=60)
        assert resp.status_code == 200, resp.text
        predictions = pd.DataFrame(resp.json()["predictions"])
        for answer, want in zip(_pyfunc_answers(predictions), _live(server.url, QUERIES), strict=True):
            _same(answer, want)
    finally:
        proc.kill()
        proc.wait(30)
        log.close()


def _wait_ping(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow models serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"mlflow models serve did not answer /ping in {timeout_s} s:\n{log.read_text()[-3000:]}")
