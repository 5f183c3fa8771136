"""The last step of `make demo`: serve a registered model on localhost, ask for one user's top-10, stop.

python -m pipelines.serve_demo --model-uri models:/recsys@champion [--tracking-uri URI] [--user-id ID]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

import httpx

from recsys.tracking.config import DEFAULT_TRACKING_URI

READY_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(base_url: str, proc: subprocess.Popen[bytes], timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll /readyz until it answers 200; raise if the server exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"the server at {base_url} was not ready after {timeout_s:.0f} s")


def run_demo_query(model_uri: str, tracking_uri: str, user_id: str | None) -> None:
    """Start the server on a free port, print one user's top-10 with item titles, stop the server.

    Args:
        model_uri: e.g. models:/recsys@champion.
        tracking_uri: the MLflow store holding the registry.
        user_id: raw user id; None = the example user the server reports at /info.
    """
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "pipelines.serve", "--model-uri", model_uri, "--tracking-uri", tracking_uri]
    proc = subprocess.Popen([*cmd, "--port", str(port), "--log-level", "warning"])
    try:
        wait_ready(base_url, proc)
        with httpx.Client(base_url=base_url, timeout=30.0) as client:
            info = client.get("/info").json()
            user = user_id if user_id is not None else info["example_user_id"]
            resp = client.post("/recommend", json={"user_id": user, "k": 10})
            if resp.status_code != 200:
                raise RuntimeError(f"/recommend answered {resp.status_code}: {resp.text}")
            body = resp.json()
        print(f"top-10 for user {user} from {info['name']} version {body['model_version']} ({info['model']}):")
        for rank, item in enumerate(body["items"], start=1):
            print(f"{rank:>3}. {item['item_id']:>10}  {item['score']:8.3f}  {item.get('text') or '-'}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", default="models:/recsys@champion")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--user-id", default=None)
    args = parser.parse_args(argv)
    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    try:
        run_demo_query(args.model_uri, tracking_uri, args.user_id)
    except (RuntimeError, TimeoutError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
