"""How strongly each ICSRec loss term pulls on the encoder, next to the rec loss, early in training.

python bench/icsrec_gradients.py [--experiment icsrec_beauty_window] [--steps 300] [--every 50]
    [--init-run RUN_ID] [key=value ...]

Trains the experiment's model on its dataset as the trainer does (its optimiser, loss and gradient
clipping; the intents clustered once at the start, not refit) and every --every steps records, on that step's
batch, each term's value and the norm of its weighted gradient over the encoder's weights: the
rec loss (CE), lambda x coarse (cross-subsequence InfoNCE) and beta x fine (intent InfoNCE), and
the coarse / CE ratio. A contrast whose gradient is many times the rec loss's steers the encoder
while it is still learning the next item. `--init-run` starts from a tracked run's saved weights
(an ICSRec or SASRec run: the same encoder) instead of a fresh encoder, to measure the terms on a
trained one. Writes bench/results/icsrec_gradients.json.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.data.datasets import ViewBatch  # noqa: E402
from recsys.model_io import load_model  # noqa: E402
from recsys.models.icsrec import ICSRec  # noqa: E402
from recsys.objectives import build_objective, training_losses  # noqa: E402
from recsys.registry import build_model  # noqa: E402
from recsys.tracking.config import DEFAULT_TRACKING_URI  # noqa: E402
from recsys.tracking.mlflow import download_run_artifacts  # noqa: E402
from recsys.tracking.records import base_record, now_iso, write_record  # noqa: E402
from recsys.train.experiment import load_experiment  # noqa: E402
from recsys.train.fit import datamodule_for, ensure_processed  # noqa: E402
from recsys.train.module import RecModule  # noqa: E402


def grad_norm(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))


def term_gradients(module: RecModule, model: ICSRec, batch: ViewBatch) -> dict[str, float]:
    """Each weighted term's value and gradient norm on `batch` (no optimiser step)."""
    inputs, targets = module.objective.inputs_and_targets(model, batch)
    hidden = model.encode(inputs, inputs != 0)
    where = targets != 0
    ce = module.loss(hidden[where], model.item_embeddings(), targets[where])
    terms = model.contrastive_terms(batch, hidden)
    params = [p for p in model.parameters() if p.requires_grad]
    out = {"ce": float(ce.detach()), "coarse": float(terms.coarse.detach())}
    out["state_norm"] = float(hidden[:, -1].detach().norm(dim=-1).mean())  # dot products scale with its square
    out["ce_grad"] = grad_norm(ce, params)
    out["coarse_grad"] = grad_norm(model.cfg.coarse_weight * terms.coarse, params)
    if terms.fine is not None:
        out["fine"] = float(terms.fine.detach())
        out["fine_grad"] = grad_norm(model.cfg.fine_weight * terms.fine, params)
    out["coarse_over_ce"] = out["coarse_grad"] / out["ce_grad"]
    return {k: round(v, 4) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="icsrec_beauty_window")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--init-run", help="start from this MLflow run's saved model weights")
    parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI)
    parser.add_argument("--out", default=str(ROOT / "bench/results/icsrec_gradients.json"))
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started, t0 = now_iso(), time.perf_counter()

    cfg = load_experiment(ROOT / f"configs/experiment/{args.experiment}.yaml", args.overrides)
    torch.manual_seed(cfg.train.seed)
    probe = build_model(cfg.model.name, cfg.model.params, 1)  # max_len and objective, for the data
    dm = datamodule_for(cfg, ensure_processed(cfg.data), probe, build_objective(probe.objective))
    dm.setup()
    model = build_model(cfg.model.name, cfg.model.params, dm.n_items)
    if not isinstance(model, ICSRec):
        raise SystemExit(f"{args.experiment} trains {cfg.model.name}, not icsrec")
    if args.init_run:
        with tempfile.TemporaryDirectory() as tmp:
            saved = load_model(download_run_artifacts(args.tracking_uri, args.init_run, "model", Path(tmp)))
        model.load_state_dict(saved.state_dict())  # strict: the encoders must match
    module = RecModule(model, cfg.train, cfg.eval)
    opt = module.build_optimizer()
    module.objective.on_epoch_start(model, dm.ordered_train_dataloader(), 0)  # intents of the untrained encoder
    model.train()

    rows = []
    batches = (batch for _ in iter(int, 1) for batch in dm.train_dataloader())  # epoch after epoch
    for step, batch in enumerate(batches):
        if step % args.every == 0:
            rows.append({"step": step, **term_gradients(module, model, batch)})
            print(rows[-1], flush=True)
        loss = training_losses(model, module.objective, batch, module.loss).total
        opt.zero_grad()
        loss.backward()
        if cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        if step + 1 >= args.steps:
            break

    command = shlex.join(["python", "bench/icsrec_gradients.py", *sys.argv[1:]])
    record = base_record("icsrec_gradients", command, started, time.perf_counter() - t0)
    record |= {"experiment": args.experiment, "overrides": args.overrides, "init_run": args.init_run}
    record |= {"threads": args.threads, "steps": rows}
    print(f"wrote {write_record(args.out, record)}")


if __name__ == "__main__":
    main()
