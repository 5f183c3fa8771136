"""Serve top-k recommendations over HTTP for a registered model version.

python -m pipelines.serve --model-uri models:/<name>@champion [--tracking-uri URI] [--host 127.0.0.1 --port 8000]

Settings not given as flags come from RECSYS_SERVE_<FIELD> variables (see recsys/serve/settings.py)
and MLFLOW_TRACKING_URI. The open-file limit is raised (up to the hard limit) to fit max_connections.
The model is loaded before the port is bound: an unknown alias, an unreachable registry, a missing,
corrupted or truncated bundle file, or a hard open-file limit below max_connections ends the process
with exit code 2 and one line on stderr naming what is wrong. SIGTERM stops it gracefully (exit 0).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import torch
from pydantic import ValidationError

from recsys.retrieval.index import set_search_threads
from recsys.serve.app import create_app
from recsys.serve.server import fit_fd_limit, make_server
from recsys.serve.settings import ServeSettings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", default=None, help="models:/<name>@<alias>, models:/<name>/<n> or a bundle dir")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=None, help="torch and FAISS threads (default 1)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # fail fast instead of MLflow's minutes of retries when the registry is down
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        settings = ServeSettings.from_env(
            os.environ, model_uri=args.model_uri, tracking_uri=args.tracking_uri, torch_threads=args.threads
        )
    except ValidationError as err:
        print(f"error: invalid settings: {_one_line(err)}", file=sys.stderr)
        return 2
    try:
        fit_fd_limit(settings.max_connections)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(settings.torch_threads)
    set_search_threads(settings.torch_threads)
    app = create_app(settings)
    try:
        app.state.holder.load()
    except Exception as err:  # the command line's edge: every load failure is one line and exit 2
        print(f"error: cannot load {settings.model_uri}: {_one_line(err)}", file=sys.stderr)
        return 2
    make_server(app, settings, host=args.host, port=args.port, log_level=args.log_level).run()
    return 0


def _one_line(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 500 else text[:497] + "..."


if __name__ == "__main__":
    sys.exit(main())
