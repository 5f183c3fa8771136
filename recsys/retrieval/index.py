"""FAISS inner-product index over item embeddings, with a torch brute-force reference search.

The index holds item rows 1..n_items of the embedding matrix under FAISS id = item_idx, so the
padding row 0 is never stored and can never be returned. `exact_search` is the slow twin every
approximate index is tested against (recall and tie-aware equality).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import torch

log = logging.getLogger(__name__)

IndexKind = Literal["flat", "ivf_flat", "ivf_pq", "hnsw"]
INDEX_KINDS: tuple[str, ...] = ("flat", "ivf_flat", "ivf_pq", "hnsw")


@dataclass(frozen=True)
class IndexConfig:
    """How to index the item embeddings; every field is validated in `__post_init__`."""

    kind: IndexKind = "flat"  # flat = exact; ivf_flat / ivf_pq / hnsw = approximate
    nlist: int | None = None  # IVF cells; None = 4 * sqrt(n_items), the usual starting point
    # IVF cells visited per query; 256 = bench/results/retrieval_scale.json's choice: recall@100 >= 0.95 at 1M and
    # 10M items of a catalog grown from trained embeddings (0.99 and 0.96), single-query p99 7 ms at 1M
    nprobe: int = 256
    pq_m: int = 16  # PQ sub-quantizers (must divide the embedding dim)
    pq_nbits: int = 8  # bits per PQ code
    refine_factor: int = 4  # ivf_pq re-ranks refine_factor * k candidates exactly (0 = no re-rank)
    hnsw_m: int = 32  # HNSW graph degree
    ef_construction: int = 200
    ef_search: int = 256  # HNSW search beam; needs to exceed the k asked for
    max_train_points: int = 64  # IVF k-means samples at most this many points per cell
    kmeans_iters: int = 10  # IVF k-means iterations (FAISS default 25; recall barely moves)
    use_gpu: bool = True  # move to faiss-gpu when it is installed and a CUDA device is visible
    seed: int = 0  # k-means / sampling seed

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"kind={self.kind!r}; expected one of {list(INDEX_KINDS)}")
        if self.nlist is not None and self.nlist < 1:
            raise ValueError(f"nlist={self.nlist!r} must be >= 1 (or None for 4*sqrt(n_items))")
        for name in ("nprobe", "pq_m", "hnsw_m", "ef_construction", "ef_search", "max_train_points", "kmeans_iters"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        if self.pq_nbits not in range(1, 17):
            raise ValueError(f"pq_nbits={self.pq_nbits!r} must be in 1..16")
        if self.refine_factor < 0:
            raise ValueError(f"refine_factor={self.refine_factor!r} must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain values for bundle.json / MLflow tags."""
        return asdict(self)

    def resolved_nlist(self, n_items: int) -> int:
        """Number of IVF cells for a catalog of `n_items` (never more than the catalog)."""
        nlist = self.nlist if self.nlist is not None else int(4 * math.sqrt(n_items))
        return max(1, min(nlist, n_items))


class ItemIndex:
    """A FAISS index whose ids are item_idx (1..n_items), searched by inner product."""

    def __init__(self, index: faiss.Index, config: IndexConfig) -> None:
        self.index = index
        self.config = config
        self._apply_search_params()

    @property
    def n_items(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def search(self, queries: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items by inner product for each query.

        Args:
            queries: [B, D] float query vectors.
            k: results per query; capped at the catalog size.

        Returns:
            (scores [B, k'] float32, item_idx [B, k'] int64), best first, k' = min(k, n_items). An
            approximate index that finds fewer than k' items pads with item 0 and score -inf.
        """
        if k < 1:
            raise ValueError(f"k={k!r} must be >= 1")
        q = _as_float32(queries)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries have shape {tuple(q.shape)}; expected [B, {self.dim}]")
        k = min(k, self.n_items)
        scores, ids = self.index.search(q, k)  # [B, k], [B, k]
        missing = ids < 0
        if missing.any():
            ids = np.where(missing, 0, ids)
            scores = np.where(missing, -np.inf, scores).astype(np.float32)
        return scores, ids.astype(np.int64, copy=False)

    def _apply_search_params(self) -> None:
        cfg = self.config
        node = faiss.downcast_index(self.index)
        while isinstance(node, faiss.IndexIDMap | faiss.IndexRefine):
            if isinstance(node, faiss.IndexRefine):
                node.k_factor = float(max(cfg.refine_factor, 1))
                node = faiss.downcast_index(node.base_index)
            else:
                node = faiss.downcast_index(node.index)
        if isinstance(node, faiss.IndexIVF):
            node.nprobe = min(cfg.nprobe, node.nlist)
        elif isinstance(node, faiss.IndexHNSW):
            node.hnsw.efSearch = cfg.ef_search
        elif hasattr(node, "nprobe"):  # GPU IVF indexes
            node.nprobe = cfg.nprobe


def build_index(item_emb: np.ndarray | torch.Tensor, config: IndexConfig | None = None) -> ItemIndex:
    """Build an inner-product index over rows 1..n_items of `item_emb` (row 0 = padding, left out).

    Args:
        item_emb: [n_items + 1, D] item embeddings, row 0 = padding.
        config: which index and its parameters; exact `flat` by default.
    """
    config = config or IndexConfig()
    emb = _as_float32(item_emb)
    if emb.ndim != 2 or emb.shape[0] < 2:
        raise ValueError(f"item_emb has shape {tuple(emb.shape)}; expected [n_items + 1, D] with n_items >= 1")
    vectors = np.ascontiguousarray(emb[1:])  # [N, D] without the padding row
    n, dim = vectors.shape
    ids = np.arange(1, n + 1, dtype=np.int64)  # FAISS id = item_idx
    ip = faiss.METRIC_INNER_PRODUCT
    if config.kind == "flat":
        index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    elif config.kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, config.hnsw_m, ip)
        hnsw.hnsw.efConstruction = config.ef_construction
        index = faiss.IndexIDMap2(hnsw)
    else:
        nlist = config.resolved_nlist(n)
        quantizer = faiss.IndexFlatIP(dim)
        ivf: faiss.IndexIVF
        if config.kind == "ivf_flat":
            ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, ip)
        else:
            if dim % config.pq_m:
                raise ValueError(f"pq_m={config.pq_m} must divide the embedding dim {dim}")
            ivf = faiss.IndexIVFPQ(quantizer, dim, nlist, config.pq_m, config.pq_nbits, ip)
        ivf.cp.seed = config.seed
        ivf.cp.niter = config.kmeans_iters
        ivf.train(_train_sample(vectors, nlist * config.max_train_points, config.seed))
        index = ivf
        if config.kind == "ivf_pq" and config.refine_factor > 0:
            # exact re-rank of the PQ candidates; IndexRefine has no ids of its own, hence the map
            index = faiss.IndexIDMap2(faiss.IndexRefineFlat(ivf))
    index.add_with_ids(vectors, ids)
    log.info("built %s index over %d items (dim %d)", config.kind, n, dim)
    return ItemIndex(_maybe_to_gpu(index, config), config)


def save_index(index: ItemIndex, path: str | Path) -> None:
    """Write the index (always as a CPU index) to `path`, under a temporary name first: a crash while
    writing never leaves a truncated index at `path`."""
    cpu = index.index
    if _is_gpu_index(cpu):
        cpu = faiss.index_gpu_to_cpu(cpu)
    target = Path(path)
    part = target.with_name(f".{target.name}.part")
    try:
        faiss.write_index(cpu, str(part))
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


def load_index(path: str | Path, config: IndexConfig) -> ItemIndex:
    """Read an index written by `save_index`; search parameters come from `config`."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"FAISS index not found: {p}")
    return ItemIndex(_maybe_to_gpu(faiss.read_index(str(p)), config), config)


@torch.no_grad()
def exact_search(
    item_emb: np.ndarray | torch.Tensor,
    queries: np.ndarray | torch.Tensor,
    k: int,
    *,
    exclude: torch.Tensor | None = None,
    chunk_elements: int = 1 << 25,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute-force top-k by torch matmul: the reference every FAISS index is checked against.

    Args:
        item_emb: [n_items + 1, D] item embeddings; row 0 (padding) is never returned.
        queries: [B, D] query vectors.
        k: results per query (capped at n_items).
        exclude: optional [B, n_items + 1] bool, True = never return this item (seen items).
        chunk_elements: at most this many scores are held at once (queries are chunked).

    Returns:
        (scores [B, k] float32, item_idx [B, k] int64), best first.
    """
    emb = torch.as_tensor(item_emb, dtype=torch.float32)
    q = torch.as_tensor(queries, dtype=torch.float32)
    n_rows = emb.shape[0]
    k = min(k, n_rows - 1)
    rows_per_chunk = max(1, chunk_elements // n_rows)
    out_scores, out_items = [], []
    for start in range(0, q.shape[0], rows_per_chunk):
        logits = q[start : start + rows_per_chunk] @ emb.T  # [b, n_items + 1]
        logits[:, 0] = -torch.inf
        if exclude is not None:
            logits.masked_fill_(exclude[start : start + rows_per_chunk], -torch.inf)
        scores, items = torch.topk(logits, k, dim=1)
        out_scores.append(scores)
        out_items.append(items)
    return torch.cat(out_scores), torch.cat(out_items)


def recall_at_k(approx_items: np.ndarray | torch.Tensor, exact_items: np.ndarray | torch.Tensor) -> float:
    """Mean fraction of the exact top-k [B, k] found in the approximate top-k [B, k]."""
    a = np.asarray(approx_items)
    e = np.asarray(exact_items)
    if a.shape != e.shape:
        raise ValueError(f"approx shape {a.shape} != exact shape {e.shape}")
    hits = sum(len(np.intersect1d(ai, ei)) for ai, ei in zip(a, e, strict=True))
    return hits / e.size if e.size else 1.0


def set_search_threads(n: int) -> None:
    """Set FAISS's OpenMP thread count (process-wide; call from a pipeline, not from library code)."""
    faiss.omp_set_num_threads(n)


def gpu_available() -> bool:
    """True when faiss-gpu is installed and sees at least one CUDA device."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _maybe_to_gpu(index: faiss.Index, config: IndexConfig) -> faiss.Index:
    if not (config.use_gpu and config.kind != "hnsw" and gpu_available()):
        return index
    try:  # not every index type has a GPU version; the CPU index still works
        res = faiss.StandardGpuResources()
        gpu = faiss.index_cpu_to_gpu(res, 0, index)
        gpu.referenced_objects = [res]  # type: ignore[attr-defined]  # keep the resources alive with the index
        return gpu
    except RuntimeError as err:
        log.warning("keeping %s index on CPU: %s", config.kind, err)
        return index


def _is_gpu_index(index: faiss.Index) -> bool:
    node = faiss.downcast_index(index)
    while isinstance(node, faiss.IndexIDMap | faiss.IndexRefine):
        node = faiss.downcast_index(node.index if isinstance(node, faiss.IndexIDMap) else node.base_index)
    return "Gpu" in type(node).__name__


def _train_sample(vectors: np.ndarray, max_points: int, seed: int) -> np.ndarray:
    if len(vectors) <= max_points:
        return vectors
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(vectors), size=max_points, replace=False))
    return np.ascontiguousarray(vectors[rows])


def _as_float32(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(x, dtype=np.float32)
