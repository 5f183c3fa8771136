"""The service's top-k for many queries at once: every user of a model, or a file of users or histories.

Each query goes through the service's own path: `Recommender.resolve` (a user's stored history, then
the given items as the most recent events), `LoadedModel.top_k` (retrieval with the history masked,
then the ranking stage), so an answer here equals `POST /recommend`'s for the same query. The
difference is the edge: a query the service would answer partly (unknown ids skipped) or with a 404
is refused here, before anything is scored, naming the value. Queries run in chunks and the result is
written to parquet chunk by chunk, so a million users fit in memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from recsys.retrieval.bundle import ServingBundle
from recsys.serve.state import LoadedModel

log = logging.getLogger(__name__)

USER_ID = "user_id"  # query: a user of the model (its stored history); answer: whose top-k
HISTORY = "history"  # query: raw item ids, oldest first (after the user's stored history, if any)
ROW = "row"  # answer: the query's row in the input (0-based), when queries carry histories
RANK = "rank"  # 1 = best
ITEM_ID = "item_id"
SCORE = "score"
READERS = {".parquet": "parquet", ".csv": "csv"}


class QueryError(ValueError):
    """A query file or frame that cannot be answered; the message names the bad value and its row."""


def read_queries(path: Path) -> pl.DataFrame:
    """Queries from a parquet or csv file: a `user_id` column, a `history` column (a list of item ids;
    in csv a string of ids separated by spaces), or both."""
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise QueryError(f"{path}: unknown file type {path.suffix!r}; expected one of {sorted(READERS)}")
    if not path.is_file():
        raise QueryError(f"{path}: no such file")
    try:
        frame = pl.read_parquet(path) if kind == "parquet" else pl.read_csv(path, infer_schema=False)
    except Exception as err:  # polars raises its own kinds for malformed files
        raise QueryError(f"{path}: cannot be read as {kind}: {str(err).splitlines()[0]}") from err
    if kind == "csv" and HISTORY in frame.columns:
        frame = frame.with_columns(pl.col(HISTORY).str.split(" ").list.eval(pl.element().filter(pl.element() != "")))
    return frame


def all_users(bundle: ServingBundle) -> pl.DataFrame:
    """One query per user with a stored history, in the bundle's order."""
    return pl.DataFrame({USER_ID: list(bundle.user_vocab)}, schema={USER_ID: pl.String})


def check_queries(frame: pl.DataFrame, bundle: ServingBundle) -> pl.DataFrame:
    """`frame`'s query columns as strings, once every row is known to be answerable in full.

    Raises:
        QueryError: no query column, no rows, an unknown user id, an item id not in the catalog, or a
            row with neither a user id nor history items; the first such value is named with its row.
    """
    columns = [c for c in (USER_ID, HISTORY) if c in frame.columns]
    if not columns:
        raise QueryError(f"queries need a {USER_ID!r} or a {HISTORY!r} column; the columns are {frame.columns}")
    if frame.height == 0:
        raise QueryError("there are no queries (no rows)")
    casts = [pl.col(USER_ID).cast(pl.String)] if USER_ID in columns else []
    if HISTORY in columns:
        if not isinstance(frame.schema[HISTORY], pl.List):
            raise QueryError(f"{HISTORY!r} must be a list of item ids per row, not {frame.schema[HISTORY]}")
        casts.append(pl.col(HISTORY).cast(pl.List(pl.String)))
    queries = frame.select(casts).with_row_index(ROW)
    if USER_ID in columns:
        users = pl.Series(list(bundle.user_vocab), dtype=pl.String)
        unknown = queries.filter(pl.col(USER_ID).is_not_null() & ~pl.col(USER_ID).is_in(users.implode()))
        _refuse(unknown, USER_ID, "is not one of the model's users")
    named = pl.lit(False)
    if USER_ID in columns:
        named = named | pl.col(USER_ID).is_not_null()
    if HISTORY in columns:
        items = pl.Series(list(bundle.item_vocab), dtype=pl.String)
        listed = queries.filter(pl.col(HISTORY).list.len() > 0).select(ROW, HISTORY).explode(HISTORY)
        unknown = listed.filter(pl.col(HISTORY).is_null() | ~pl.col(HISTORY).is_in(items.implode()))
        _refuse(unknown, HISTORY, "is not in the catalog")
        named = named | (pl.col(HISTORY).list.len() > 0)
    empty = queries.filter(~named.fill_null(False))
    if empty.height:
        row = empty[ROW][0]
        raise QueryError(f"row {row}: empty history: no {USER_ID} and no {HISTORY} items ({empty.height} such rows)")
    return queries.drop(ROW)


def recommend_chunks(
    model: LoadedModel, queries: pl.DataFrame, *, k: int, chunk_size: int, exclude_seen: bool = True
) -> Iterator[pl.DataFrame]:
    """The top-k of every query of a checked frame (`check_queries`), one frame per chunk of queries.

    Each frame has columns `row` (when the queries carry histories) and/or `user_id` (when they carry
    users), then `rank` (1 = best), `item_id` and `score`, best first per query.

    Args:
        model: the loaded version (and ranking stage) the service would answer with.
        queries: checked queries.
        k: items per query (fewer when the catalog minus the history is smaller).
        chunk_size: queries encoded and searched together.
        exclude_seen: drop items of the query's history, as the service does by default.
    """
    if k < 1 or chunk_size < 1:
        raise ValueError(f"k and chunk_size must be >= 1, got k={k}, chunk_size={chunk_size}")
    recommender, raw_ids = model.recommender, model.recommender.bundle.item_raw_ids
    for start in range(0, queries.height, chunk_size):
        part = queries.slice(start, chunk_size)
        users = part[USER_ID].to_list() if USER_ID in part.columns else [None] * part.height
        lists = part[HISTORY].to_list() if HISTORY in part.columns else [None] * part.height
        histories = [recommender.resolve(u, h or []).items for u, h in zip(users, lists, strict=True)]
        tops = model.top_k(histories, k, exclude_seen=exclude_seen)
        fallbacks = sum(bool(t.fallback) for t in tops)
        if fallbacks:
            last = start + part.height - 1
            log.warning("queries %d..%d: the ranker failed on %d; those are in retrieval order", start, last, fallbacks)
        lengths = np.array([len(t.items) for t in tops], dtype=np.int64)
        owner = np.repeat(np.arange(part.height), lengths)  # [n_answers] query of each answer
        items = np.concatenate([t.items for t in tops])
        columns: dict[str, pl.Series] = {}
        if HISTORY in part.columns:
            columns[ROW] = pl.Series(ROW, start + owner, dtype=pl.Int64)
        if USER_ID in part.columns:
            columns[USER_ID] = part[USER_ID].gather(owner)
        ranks = np.concatenate([np.arange(1, n + 1) for n in lengths])
        columns[RANK] = pl.Series(RANK, ranks, dtype=pl.Int32)
        columns[ITEM_ID] = pl.Series(ITEM_ID, raw_ids[items].tolist(), dtype=pl.String)
        columns[SCORE] = pl.Series(SCORE, np.concatenate([t.scores for t in tops]), dtype=pl.Float32)
        yield pl.DataFrame(columns)


def write_recommendations(
    model: LoadedModel,
    queries: pl.DataFrame,
    out: Path,
    *,
    k: int,
    chunk_size: int,
    exclude_seen: bool = True,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Check `queries`, then write the top-k of each to the parquet file `out`, chunk by chunk; the
    number of rows written. `out` appears only once complete (written under a temporary name).

    Args:
        model: the loaded version (and ranking stage) the service would answer with.
        queries: a frame with a `user_id` and/or a `history` column (see `check_queries`).
        out: the parquet file (replaced when it exists).
        k: items per query.
        chunk_size: queries scored together.
        exclude_seen: drop items of the query's history.
        progress: called with the number of queries done after each chunk.
    """
    checked = check_queries(queries, model.recommender.bundle)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    writer: pq.ParquetWriter | None = None  # opened on the first chunk: its schema is the file's
    written = done = 0
    try:
        for chunk in recommend_chunks(model, checked, k=k, chunk_size=chunk_size, exclude_seen=exclude_seen):
            table = chunk.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
            written += chunk.height
            step = min(chunk_size, checked.height - done)
            done += step
            if progress is not None:
                progress(step)
        assert writer is not None  # checked queries are never empty: one chunk at least
        writer.close()
        writer = None
        os.replace(tmp, out)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    return written


def _refuse(bad: pl.DataFrame, column: str, problem: str) -> None:
    """Raise a `QueryError` naming the first bad value of `column` and its row, when there is one."""
    if bad.height == 0:
        return
    row, value, rows = bad[ROW][0], bad[column][0], bad[ROW].n_unique()
    label = "history item" if column == HISTORY else column
    more = f" ({rows} rows like it)" if rows > 1 else ""
    raise QueryError(f"row {row}: {label} {value!r} {problem}{more}")
