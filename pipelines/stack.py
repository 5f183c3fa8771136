"""Run the tracking stack locally: PostgreSQL and an MLflow server on it, on 127.0.0.1, until Ctrl-C.

python -m pipelines.stack [--dir .stack] [--port 5000] [--pg-port PORT]

The same two services as docker-compose.yml's `postgres` and `mlflow`, without Docker. PostgreSQL's
cluster (`<dir>/postgres`; under root, a link to a directory under the `postgres` user's home when
that user cannot enter <dir>) and the artifacts (`<dir>/mlartifacts`) are kept across restarts; the
server's log is `<dir>/mlflow.log`. `make stack STACK_DIR=<dir>` passes --dir. Point the pipelines at it with
`export MLFLOW_TRACKING_URI=http://127.0.0.1:<port>`; the MLflow UI is the same address.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from recsys.tracking.local_stack import StackError, local_stack


def _stop(signum: int, frame: FrameType | None) -> None:
    del frame
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(".stack"), help="where the cluster and artifacts live")
    parser.add_argument("--port", type=int, default=5000, help="MLflow server port (UI and REST API)")
    parser.add_argument("--pg-port", type=int, default=None, help="PostgreSQL port (default: a free one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for signum in (signal.SIGTERM, signal.SIGINT):  # SIGINT too: a shell starts background jobs ignoring it
        signal.signal(signum, _stop)
    try:
        with local_stack(args.dir, mlflow_port=args.port, pg_port=args.pg_port) as stack:
            print(f"PostgreSQL: 127.0.0.1:{stack.postgres.port}, database mlflow (cluster {stack.postgres.data_dir})")
            print(f"MLflow UI and API: {stack.tracking_uri} (log {stack.server.log_path})")
            print(f"  export MLFLOW_TRACKING_URI={stack.tracking_uri}")
            print("Ctrl-C stops both.", flush=True)
            while stack.server.alive():
                time.sleep(1.0)
            print(f"error: the MLflow server stopped; see {stack.server.log_path}", file=sys.stderr)
            return 1
    except StackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopped", flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main())
