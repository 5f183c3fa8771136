"""The item tower: one item representation from an ID view, a frozen text view, or both.

- ID view: a learned table (`ItemEmbedding`), one row per catalog item;
- text view: a frozen [N + 1, W] table of a pretrained model's item vectors (`recsys.nn.item_vectors`,
  cached on disk), brought to the model width D by an adapter: `linear` (a learned Linear over the
  standardised vectors), `pca` (reduced offline to D by PCA, whitened or not, used as is times a
  learned scale) or `identity` (used as is: vectors of width D that the model encodes itself and
  installs with `set_text_table`, e.g. Recformer's re-encoded item table);
- fused by `sum` or `concat` (then a learned Linear(2D -> D)).

Interface (what a sequence model uses, e.g. as `ItemSequenceEncoder`'s item table):
`tower(items[...]) -> [..., D]`, `tower.item_weight() -> [N + 1, D]` (the tied scoring table),
`tower.id_view(items)` / `tower.text_view(items)` (each view alone, for two-view models),
`tower.set_text_table(table)` (built by `build_text_table` from `ItemFeatures`), and
`tower.drop_ids(items)`: items without an ID row (new, cold items) are represented by their text
part only; `tower.keep_ids_of(trained)` drops every item outside the training sequences (`ids_for:
trained`, the default); `id_dropout` trains that text-only form on items that have an ID row too, and
`borrow_ids: k` gives such an item the mean ID row of its k nearest text neighbours instead of none.
`id_width` makes the ID view narrower than the text view (read alone, never fused). Padding (id 0) is always zeros.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from recsys.data.item_features import ItemFeatures
from recsys.nn.embeddings import ItemEmbedding
from recsys.nn.item_vectors import (
    POOLINGS,
    apply_reduction,
    cached_item_vectors,
    fit_reduction,
    item_sentence,
    random_like_table,
)
from recsys.nn.pretrained import SMOLLM2

ADAPTERS = ("linear", "pca", "identity")
FUSES = ("sum", "concat")
IDS_FOR = ("trained", "all")
INIT_STD = 0.02  # the ID table's init (GPT-2); each view starts at this per-dimension scale


@dataclass(frozen=True)
class ItemTowerConfig:
    id_embedding: bool = True  # the ID view
    text: str = SMOLLM2  # the text view's encoder (smollm2-135m, all-MiniLM-L6-v2, a local directory); "" = none
    random_text: bool = False  # control: the encoder's vectors replaced by random ones of the same width and row norms
    random_seed: int = 0  # draws the random vectors
    fields: tuple[str, ...] = ("title", "year", "genres")  # written as "Title (year). Genres: a, b."
    layer: int = -1  # encoder block whose output is pooled (1..n, or -1 = the last)
    pooling: str = "mean"  # mean | last (token)
    normalize: bool = False  # unit-normalise each pooled vector first (sentence-transformer style, MiniLM)
    max_tokens: int = 48  # tokens of one item's text (ML-1M's longest: 41 SmolLM2 tokens)
    adapter: str = "pca"  # pca: reduced offline to the model width; linear: a learned projection; identity: as is
    whiten: bool = True  # pca: unit variance per component (identity covariance over the catalog)
    text_dim: int = 576  # the encoder's width (SmolLM2 576, MiniLM 384); a linear adapter's table width
    fuse: str = "sum"  # sum | concat (both views only)
    # both views: which items keep an ID row. trained: only items of the training sequences (a cold or
    # new item is its text part only; an untrained ID row would be noise); all: every catalog item
    ids_for: str = "trained"
    # both views, training only: each item (per forward call) is its text part only with this probability,
    # so the model also learns to rank items that have no ID row (DropoutNet; Volkovs et al., 2017)
    id_dropout: float = 0.0
    # both views: k > 0 gives an item without an ID row (cold, added, or dropped by id_dropout) the mean ID
    # row of its k nearest text neighbours that have one (cosine over the text table), found again when the
    # text table is set, the trained items are known (`keep_ids_of`) or an item is added; 0: such an item is
    # its text part only
    borrow_ids: int = 0
    # borrow_ids > 0: whether training borrows too (an item that id_dropout drops takes its neighbours' rows);
    # False: only scoring (eval mode) borrows, so training runs as without borrowing
    borrow_training: bool = True
    # the ID view's width; 0: the model width D. A narrower ID view (e.g. SASRec's 64 beside a 384-wide text
    # table) is read through `id_view` alone: `forward` sums or concatenates views of one width only. Its rows
    # start from the text (`init_ids_from_text`) as the items' text rows reduced to that width
    id_width: int = 0
    cache_dir: str = "data/cache"  # converted checkpoints and cached vectors (git-ignored)

    def __post_init__(self) -> None:
        if not self.id_embedding and not self.text:
            raise ValueError("item_tower needs id_embedding, a text encoder, or both")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.adapter not in ADAPTERS:
            raise ValueError(f"adapter must be one of {ADAPTERS}, got {self.adapter!r}")
        if self.ids_for not in IDS_FOR:
            raise ValueError(f"ids_for must be one of {IDS_FOR}, got {self.ids_for!r}")
        if self.fuse not in FUSES:
            raise ValueError(f"fuse must be one of {FUSES}, got {self.fuse!r}")
        if not 0.0 <= self.id_dropout < 1.0:
            raise ValueError(f"id_dropout must be in [0, 1), got {self.id_dropout}")
        if self.id_dropout > 0 and not (self.id_embedding and self.text):
            raise ValueError("id_dropout needs both an ID view and a text view (an item without its ID is its text)")
        if self.borrow_ids < 0:
            raise ValueError(f"borrow_ids must be >= 0, got {self.borrow_ids}")
        if self.borrow_ids > 0 and not (self.id_embedding and self.text):
            raise ValueError("borrow_ids needs both an ID view and a text view (neighbours are found by text)")
        if self.id_width < 0:
            raise ValueError(f"id_width must be >= 0 (0: the model width), got {self.id_width}")
        for name in ("max_tokens", "text_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.fields:
            raise ValueError("fields must name at least one item text field")

    def table_width(self, dim: int) -> int:
        """The frozen text table's width for a model of width `dim`."""
        return self.text_dim if self.adapter == "linear" else dim


@dataclass(frozen=True)
class TextTable:
    """The text view's frozen table and the map that made it, which a new item's vector goes through too."""

    table: Tensor  # [N + 1, W], row 0 zeros
    mean: Tensor  # [E] the encoder vectors' catalog mean
    proj: Tensor  # [E, W] (x - mean) @ proj is an item's row
    cache_hit: bool  # whether the encoder's vectors came from the disk cache


def encoder_vectors(cfg: ItemTowerConfig, texts: list[str]) -> tuple[Tensor, bool]:
    """The encoder's pooled vectors [K, E] of item sentences (normalised if `cfg.normalize`), cached."""
    vectors, hit = cached_item_vectors(
        texts, cfg.text, cfg.cache_dir, layer=cfg.layer, pooling=cfg.pooling, max_tokens=cfg.max_tokens
    )
    if cfg.adapter == "linear" and vectors.shape[1] != cfg.text_dim:
        raise ValueError(f"text_dim is {cfg.text_dim} but {cfg.text!r} gives {vectors.shape[1]}-wide vectors")
    return (nn.functional.normalize(vectors, dim=-1) if cfg.normalize else vectors), hit


def build_text_view(cfg: ItemTowerConfig, features: ItemFeatures, dim: int) -> TextTable:
    """The tower's frozen text table [N + 1, `cfg.table_width(dim)`] (row 0 zeros) from the items' text,
    with the reduction fitted on the catalog (PCA to `dim`, or standardised for a `linear` adapter)."""
    if cfg.adapter == "identity":
        raise ValueError("adapter 'identity' takes vectors the model encodes itself (set_text_table), not an encoder's")
    texts = [item_sentence(features, i, cfg.fields) for i in range(1, features.n_items + 1)]
    vectors, hit = encoder_vectors(cfg, texts)
    table = torch.cat([torch.zeros(1, vectors.shape[1]), vectors])  # row 0 = padding
    if cfg.random_text:
        table = random_like_table(table, torch.Generator().manual_seed(cfg.random_seed))
    mean, proj = fit_reduction(table, dim if cfg.adapter == "pca" else None, whiten=cfg.whiten)
    reduced = torch.cat([torch.zeros(1, proj.shape[1]), apply_reduction(table[1:], mean, proj)])
    return TextTable(reduced, mean.float(), proj.float(), hit)


def build_text_table(cfg: ItemTowerConfig, features: ItemFeatures, dim: int) -> tuple[Tensor, bool]:
    """`build_text_view`'s (table, whether the encoder's vectors came from the disk cache)."""
    view = build_text_view(cfg, features, dim)
    return view.table, view.cache_hit


class ItemTower(nn.Module):
    """Item ids -> vectors [..., D] from the ID view, the text view, or both (see the module docstring).

    Args:
        cfg: the tower's settings.
        n_items: catalog items, ids 1..n_items (0 = padding).
        dim: the model width D.
    """

    def __init__(self, cfg: ItemTowerConfig, n_items: int, dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.dim = dim
        self.id_emb = ItemEmbedding(n_items, cfg.id_width or dim) if cfg.id_embedding else None
        self.text_table: Tensor  # [N + 1, W] frozen, row 0 zeros
        width = cfg.table_width(dim) if cfg.text else 0
        self.register_buffer("text_table", torch.zeros(n_items + 1, width))
        # the catalog's reduction of encoder vectors (TextTable.mean / .proj): how an added item gets its row;
        # E is the encoder's width, known once the table is set or loaded (empty: unknown)
        self.text_mean: Tensor  # [E]
        self.text_proj: Tensor  # [E, W]
        self.register_buffer("text_mean", torch.zeros(0))
        self.register_buffer("text_proj", torch.zeros(0, width))
        self.adapter: nn.Module | None = None
        self.text_scale: nn.Parameter | None = None
        if cfg.text and cfg.adapter == "linear":
            self.adapter = nn.Linear(cfg.text_dim, dim, bias=False)
            nn.init.normal_(self.adapter.weight, std=INIT_STD / cfg.text_dim**0.5)  # unit-variance inputs
        elif cfg.text and cfg.adapter == "pca":  # the table has unit variance per dimension: the ID table's scale
            self.text_scale = nn.Parameter(torch.tensor(INIT_STD))
        both = cfg.id_embedding and bool(cfg.text)
        self.fuse = nn.Linear(2 * dim, dim, bias=False) if both and cfg.fuse == "concat" else None
        self.has_id: Tensor  # [N + 1] bool: whether an item's ID row is used (padding: no)
        self.register_buffer("has_id", torch.arange(n_items + 1) > 0)
        # [N + 1, borrow_ids] the items whose ID rows an item without its own borrows (0 = none)
        self.id_neighbours: Tensor
        self.register_buffer("id_neighbours", torch.zeros(n_items + 1, cfg.borrow_ids, dtype=torch.long))

    @torch.no_grad()
    def set_text_table(self, table: Tensor, mean: Tensor | None = None, proj: Tensor | None = None) -> None:
        """Install the frozen text table [N + 1, W] (row 0 = padding), e.g. `build_text_view`'s, and the
        reduction that made it (needed to add items by text later)."""
        if table.shape != self.text_table.shape:
            raise ValueError(f"text table must be {tuple(self.text_table.shape)}, got {tuple(table.shape)}")
        self.text_table.copy_(table)
        if mean is not None and proj is not None:
            if proj.shape != (len(mean), table.shape[1]):
                raise ValueError(f"text reduction must be [E] and [E, {table.shape[1]}], got {tuple(proj.shape)}")
            self.text_mean = mean.to(self.text_table).clone()
            self.text_proj = proj.to(self.text_table).clone()
        self.find_id_neighbours(torch.arange(1, len(self.has_id), device=self.has_id.device))  # the new text's

    @torch.no_grad()
    def set_borrow_ids(self, k: int) -> None:
        """Borrow from `k` text neighbours from now on (`borrow_ids`; 0: none), found anew for every item."""
        self.cfg = dataclasses.replace(self.cfg, borrow_ids=k)  # validated as a config is
        self.id_neighbours = self.id_neighbours.new_zeros(len(self.has_id), k)
        self.find_id_neighbours(torch.arange(1, len(self.has_id), device=self.has_id.device))

    @torch.no_grad()
    def add_items(self, texts: list[str]) -> Tensor:
        """Append items N + 1 .. N + K by their sentences (`sentence_of`): the encoder's vectors through the
        catalog's reduction, text part only (no ID row). Returns their fused vectors [K, D]."""
        if not self.cfg.text:
            raise ValueError("this item tower has no text view: it cannot add items by text")
        if self.cfg.random_text:
            raise ValueError("a random_text tower (the control) has no text encoder to add items with")
        if self.text_proj.numel() == 0:
            raise ValueError("this model was saved without its text reduction; re-train it to add items by text")
        vectors, _ = encoder_vectors(self.cfg, texts)
        return self.append_text_rows(apply_reduction(vectors, self.text_mean, self.text_proj))

    @torch.no_grad()
    def append_text_rows(self, rows: Tensor) -> Tensor:
        """Append items N + 1 .. N + K by their text-table rows [K, W] (text part only, no ID row).
        Returns their fused vectors [K, D] (with a narrower ID view, which nothing fuses: their text views)."""
        if rows.shape[1:] != self.text_table.shape[1:]:
            raise ValueError(f"text rows must be [K, {self.text_table.shape[1]}], got {tuple(rows.shape)}")
        first, added = len(self.has_id), len(rows)
        self.text_table = torch.cat([self.text_table, rows.to(self.text_table)])
        self.has_id = torch.cat([self.has_id, torch.zeros(added, dtype=torch.bool, device=self.has_id.device)])
        self.id_neighbours = torch.cat([self.id_neighbours, self.id_neighbours.new_zeros(added, self.cfg.borrow_ids)])
        self.find_id_neighbours(torch.arange(first, first + added, device=self.has_id.device))
        if self.id_emb is not None:  # unused zero rows: the table keeps one row per item (a saved model reloads)
            weight = self.id_emb.weight
            self.id_emb.weight = nn.Parameter(torch.cat([weight, weight.new_zeros(added, weight.shape[1])]))
            self.id_emb.num_embeddings += added
            self.id_emb.n_items += added
        new = torch.arange(first, first + added, device=self.has_id.device)
        out: Tensor = self(new) if self.fusable else self.text_view(new)
        return out

    @property
    def fusable(self) -> bool:
        """Whether `forward` can fuse the views: one view, or both of the model's width (no narrower `id_width`)."""
        return self.id_emb is None or not self.cfg.text or self.id_emb.weight.shape[1] == self.dim

    @torch.no_grad()
    def init_ids_from_text(self) -> None:
        """Set every used ID row to its item's text view: a text + ID item starts from its text vector. A narrower
        ID view (`id_width`) starts from the text views reduced to its width: their principal components over the
        items with an ID row, whitened and scaled to the ID table's init (`INIT_STD` per dimension), so similar
        texts start close and the rows start as small as a fresh ID table's."""
        if self.id_emb is None or not self.cfg.text:
            raise ValueError("initialising ID rows from text needs both an ID view and a text view")
        items = self.has_id.nonzero().flatten()
        text = self.text_view(items).float()
        width = self.id_emb.weight.shape[1]
        if width != text.shape[1]:  # as many components as the rows span (the rest start at 0)
            components = min(width, len(text) - 1, text.shape[1])
            reduced = text.new_zeros(len(text), width)
            if components > 0:
                mean, proj = fit_reduction(torch.cat([text.new_zeros(1, text.shape[1]), text]), components)
                reduced[:, :components] = apply_reduction(text, mean, proj) * INIT_STD
            text = reduced
        self.id_emb.weight[items] = text.to(self.id_emb.weight)

    def _load_from_state_dict(
        self, state_dict: dict[str, Tensor], prefix: str, *args: object, **kwargs: object
    ) -> None:
        for name in ("text_mean", "text_proj", "id_neighbours"):  # sized as saved; saved before they were kept: empty
            saved = state_dict.setdefault(prefix + name, getattr(self, name))
            setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def drop_ids(self, items: Tensor) -> None:
        """Represent `items` (ids) by their text part only from now on (new or cold items)."""
        if not self.cfg.text:
            raise ValueError("an item without an ID row needs the text view; this tower has none")
        self.has_id[items] = False

    @torch.no_grad()
    def keep_ids_of(self, trained: Tensor) -> None:
        """With both views and `ids_for: trained`, every item outside `trained` (ids) is its text part only
        (plus its neighbours' ID rows with `borrow_ids`); then every item's ID neighbours are found."""
        if not (self.cfg.id_embedding and self.cfg.text):
            return
        if self.cfg.ids_for == "trained":
            untrained = torch.ones_like(self.has_id)
            untrained[0] = False
            untrained[trained.to(self.has_id.device)] = False
            self.drop_ids(untrained.nonzero().flatten())
        self.find_id_neighbours(torch.arange(1, len(self.has_id), device=self.has_id.device))

    @torch.no_grad()
    def find_id_neighbours(self, items: Tensor, chunk: int = 4096) -> None:
        """`items`' `borrow_ids` nearest text neighbours (cosine) among the other items with an ID row."""
        k = self.cfg.borrow_ids
        donors = self.has_id.nonzero().flatten()  # [M]
        if k == 0 or len(items) == 0 or len(donors) == 0:
            return
        text = nn.functional.normalize(self.text_table.float(), dim=-1)
        for part in torch.split(items, chunk):
            sims = text[part] @ text[donors].T  # [P, M]
            sims[part[:, None] == donors[None, :]] = float("-inf")  # never an item's own row
            top = sims.topk(min(k, len(donors)), dim=1)
            self.id_neighbours[part] = 0
            self.id_neighbours[part, : top.indices.shape[1]] = torch.where(
                top.values.isfinite(), donors[top.indices], 0
            )

    @property
    def borrowing(self) -> bool:
        """Whether an item without its ID row borrows its neighbours' rows now (`borrow_ids`, `borrow_training`)."""
        return self.cfg.borrow_ids > 0 and (self.cfg.borrow_training or not self.training)

    def borrow(self, values: Tensor, items: Tensor, uses: Tensor) -> Tensor:
        """Per-item `values` [N + 1, ...] (row 0 zeros) of `items` [...]: each item's own where `uses` [...], else
        (`borrowing`) the mean of its text neighbours' values, or zeros."""
        own = values[items]
        keep = uses.reshape(*uses.shape, *[1] * (own.dim() - uses.dim()))
        if not self.borrowing:
            return own * keep
        neighbours = self.id_neighbours[items]  # [..., k], 0 = none
        real = (neighbours != 0).reshape(*neighbours.shape, *[1] * (own.dim() - uses.dim()))
        total = (values[neighbours] * real).sum(uses.dim())  # masked: row 0 (padding) neither adds nor learns
        return torch.where(keep, own, total / real.sum(uses.dim()).clamp(min=1))

    def _id_rows(self, items: Tensor, uses: Tensor) -> Tensor:
        """ID rows [..., D] of `items` [...]: their own where `uses` [...], else (`borrowing`) the mean of
        their text neighbours' rows, or zeros."""
        assert self.id_emb is not None
        return self.borrow(self.id_emb.weight, items, uses)

    def uses_id(self, items: Tensor) -> Tensor:
        """Whether each of `items` [...] is represented with its ID row [...] bool: it has one and, when
        training with `id_dropout`, the row was not dropped for this call (one draw per item id)."""
        uses = self.has_id
        if self.training and self.cfg.id_dropout > 0:
            uses = uses & (torch.rand(uses.shape, device=uses.device) >= self.cfg.id_dropout)
        return uses[items]

    def id_view(self, items: Tensor) -> Tensor:
        """The ID view [..., D] of `items` [...] (an item without an ID row: zeros, or with `borrow_ids` the
        mean of its text neighbours' rows)."""
        if self.id_emb is None:
            raise ValueError("this item tower has no ID view (id_embedding: false)")
        return self._id_rows(items, self.uses_id(items))

    def text_view(self, items: Tensor) -> Tensor:
        """The projected text view [..., D] of `items` [...] (padding zeros)."""
        if not self.cfg.text:
            raise ValueError("this item tower has no text view (text: '')")
        vectors = self.text_table[items]  # [..., W], row 0 zeros
        if self.adapter is not None:
            out: Tensor = self.adapter(vectors)
            return out
        if self.text_scale is not None:
            return vectors * self.text_scale
        return vectors  # identity

    def forward(self, items: Tensor) -> Tensor:
        """The fused item vectors [..., D] of `items` [...]."""
        if not self.cfg.text:
            return self.id_view(items)
        text = self.text_view(items)
        if self.id_emb is None:
            return text
        if not self.fusable:
            raise ValueError(
                f"the ID view is {self.id_emb.weight.shape[1]} wide (id_width) and the text view {text.shape[-1]}: "
                "only views of one width fuse; read each alone (id_view, text_view)"
            )
        uses = self.uses_id(items)  # [...]
        ids = self._id_rows(items, uses)
        if self.fuse is None:
            return ids + text
        fused: Tensor = self.fuse(torch.cat([ids, text], dim=-1))
        if self.cfg.borrow_ids > 0:  # every item has an ID part, its own or borrowed
            return fused
        # an item without an ID row is its text part only (the fused projection would mix in a zero ID)
        return torch.where(uses[..., None], fused, text)

    def item_weight(self) -> Tensor:
        """The fused table [N + 1, D] of every item (the tied scoring table); row 0 zeros."""
        table: Tensor = self(torch.arange(len(self.has_id), device=self.has_id.device))
        return table
