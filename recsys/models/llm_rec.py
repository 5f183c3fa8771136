"""LLM-backed recommender in the style of Lite-LLM4Rec (Wang et al., 2024): one forward pass, no beam search.

- item LLM: each item's text (title, year, genres) is encoded once by a frozen text model
  (all-MiniLM-L6-v2, or the recommendation LLM's own checkpoint mean-pooled) into a vector, cached
  on disk keyed by the text and the model; an optional learned ID embedding is added after the
  projection;
- recommendation LLM: a pretrained causal LM's decoder stack (SmolLM2-135M by default, or any local
  Hugging Face Llama / Qwen2 / GPT-2 directory), fed the projected item vectors through
  `inputs_embeds`, optionally cut to its first `n_layers` blocks, tuned with LoRA, fully, or frozen;
- projection head: the last hidden state, through a linear head, scored against the projected item
  table (the item embeddings of the contract), trained with the shared full-CE loss; inference is
  one forward pass and a top-k.

The backbone's vocabulary table is dropped (the model reads vectors, not tokens), so the saved
state carries the kept blocks, the adapters, the projections and the item vectors, not 49k tokens.
Exception to "shared pieces come only from recsys/nn": the backbone is a pretrained model, used
through `transformers` / `peft` (imported lazily) and adapted here, as STYLE.md's habit 16 asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from recsys.data.item_features import ItemFeatures
from recsys.models.base import SequentialRecommender
from recsys.nn.pretrained import MINILM, SMOLLM2, cached_text_vectors, model_path

TUNING = ("lora", "full", "frozen")
INPUT_SCALES = ("none", "token_norm")
WINDOWS = {"last": "next_item", "random": "random_window"}  # windows -> the objective training them
BACKBONE_ITEMS = "backbone"  # item_encoder value: the recommendation LLM's own checkpoint, mean-pooled


@dataclass(frozen=True)
class LLMRecConfig:
    backbone: str = SMOLLM2  # or a local Hugging Face causal-LM directory
    pretrained: bool = True  # False: the backbone's architecture randomly initialised (the ablation)
    n_layers: int = 0  # decoder blocks kept, the first ones; 0 keeps them all (SmolLM2: 30)
    tuning: str = "lora"  # lora | full | frozen (the backbone; projections and head always train)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")  # Llama / Qwen2 names (GPT-2: c_attn)
    item_encoder: str = MINILM  # "backbone", all-MiniLM-L6-v2, or a local Hugging Face directory
    fields: tuple[str, ...] = ("title", "year", "genres")  # item text fields, in this order
    max_item_tokens: int = 32  # tokens of one item's text for the item encoder
    id_embedding: bool = True  # add a learned ID vector to each projected text vector
    max_len: int = 20  # history items read
    # none: projected item vectors enter the backbone as they are; token_norm: each is rescaled to the
    # mean row norm of the backbone's own token table (what its first block was trained to read)
    input_scale: str = "none"
    # last: each user trains on the last max_len + 1 items of their sequence (the default objective);
    # random: on a window placed at random in it, drawn again each epoch (objective random_window)
    windows: str = "last"
    cache_dir: str = "data/cache"  # converted checkpoints and item vectors (relative to the working dir)

    def __post_init__(self) -> None:
        for name in ("n_layers", "lora_r", "lora_alpha"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_len", "max_item_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.tuning not in TUNING:
            raise ValueError(f"tuning must be one of {TUNING}, got {self.tuning!r}")
        if self.tuning == "lora" and (self.lora_r < 1 or not self.lora_targets):
            raise ValueError(
                f"tuning 'lora' needs lora_r >= 1 and lora_targets, got {self.lora_r}, {self.lora_targets}"
            )
        if not self.fields:
            raise ValueError("fields must name at least one item text field")
        if self.input_scale not in INPUT_SCALES:
            raise ValueError(f"input_scale must be one of {INPUT_SCALES}, got {self.input_scale!r}")
        if self.windows not in WINDOWS:
            raise ValueError(f"windows must be one of {tuple(WINDOWS)}, got {self.windows!r}")


def _blocks(backbone: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder blocks of a Hugging Face base model (Llama / Qwen2: `layers`, GPT-2: `h`)."""
    for attr in ("layers", "h"):
        blocks = getattr(backbone, attr, None)
        if isinstance(blocks, nn.ModuleList):
            return attr, blocks
    raise TypeError(f"{type(backbone).__name__} has no `layers` or `h` block list")


def load_backbone(cfg: LLMRecConfig) -> Any:
    """The base model (no LM head) of `cfg.backbone`, pretrained or random, cut to `n_layers` blocks,
    its token table replaced by one row (inputs come as vectors), tuned per `cfg.tuning`."""
    from transformers import AutoConfig, AutoModel

    path = model_path(cfg.backbone, cfg.cache_dir)
    config = AutoConfig.from_pretrained(path)
    keep = cfg.n_layers or int(config.num_hidden_layers)
    if keep > config.num_hidden_layers:
        raise ValueError(f"n_layers {keep} > the backbone's {config.num_hidden_layers} layers")
    config.num_hidden_layers = keep  # loading skips the weights of the blocks cut off
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[:keep]
    if cfg.pretrained:
        backbone = AutoModel.from_pretrained(path, config=config, dtype=torch.float32)
    else:
        backbone = AutoModel.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    _, blocks = _blocks(backbone)
    assert len(blocks) == keep, (len(blocks), keep)
    backbone.token_norm = float(backbone.get_input_embeddings().weight.detach().norm(dim=-1).mean())
    backbone.set_input_embeddings(nn.Embedding(1, int(config.hidden_size)))  # unused: inputs_embeds only
    backbone.get_input_embeddings().weight.requires_grad_(False)
    if cfg.tuning == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.lora_targets))
        backbone = inject_adapter_in_model(lora, backbone)
    for name, p in backbone.named_parameters():
        p.requires_grad_(cfg.tuning == "full" or (cfg.tuning == "lora" and "lora_" in name))
    backbone.train()  # from_pretrained returns eval mode; modes follow this module's
    return backbone


class LLMRec(SequentialRecommender):
    Config = LLMRecConfig
    uses_item_features = True

    def __init__(self, cfg: LLMRecConfig, n_items: int, item_features: ItemFeatures | None = None) -> None:
        super().__init__()
        from transformers import AutoConfig

        self.cfg = cfg
        self.max_len = cfg.max_len
        self.objective = WINDOWS[cfg.windows]  # next-item, a loss at every position of the window
        self.backbone: Any = load_backbone(cfg)
        dim = int(self.backbone.config.hidden_size)
        self.input_norm: torch.Tensor  # [] the token table's mean row norm (only with input_scale token_norm)
        if cfg.input_scale == "token_norm":  # no buffer otherwise: models saved before the option still load
            self.register_buffer("input_norm", torch.tensor(self.backbone.token_norm))
        encoder = model_path(self.item_encoder_name, cfg.cache_dir)
        text_dim = int(AutoConfig.from_pretrained(encoder).hidden_size)
        self.item_vectors: torch.Tensor  # [N + 1, E] unit text vectors of the item LLM, row 0 zeros
        self.register_buffer("item_vectors", torch.zeros(n_items + 1, text_dim))
        self.project = nn.Linear(text_dim, dim)  # item LLM space -> recommendation LLM space
        self.item_id = nn.Embedding(n_items + 1, dim, padding_idx=0) if cfg.id_embedding else None
        if self.item_id is not None:
            nn.init.normal_(self.item_id.weight, std=0.02)
            self.item_id.weight.data[0].zero_()
        self.head = nn.Linear(dim, dim)  # last hidden state -> the item table's space
        self.cache_hit = False  # whether the item vectors came from the disk cache
        if item_features is not None:
            self.set_item_text(item_features)

    @property
    def item_encoder_name(self) -> str:
        return self.cfg.backbone if self.cfg.item_encoder == BACKBONE_ITEMS else self.cfg.item_encoder

    def item_texts(self, features: ItemFeatures) -> list[str]:
        """Every item's text (rows 1..N), its fields as key-value text."""
        missing = [f for f in self.cfg.fields if f not in features.text]
        if missing:
            raise KeyError(f"item text fields {missing} not in the dataset's {list(features.text_fields)}")
        return [features.render(i, fields=self.cfg.fields) for i in range(1, features.n_items + 1)]

    @torch.no_grad()
    def set_item_text(self, features: ItemFeatures) -> None:
        """Encode every item's text with the item LLM (from the disk cache when text and model are unchanged)."""
        if features.n_items + 1 != len(self.item_vectors):
            raise ValueError(f"item features cover {features.n_items} items, the model {len(self.item_vectors) - 1}")
        vectors, self.cache_hit = cached_text_vectors(
            self.item_texts(features), self.item_encoder_name, self.cfg.cache_dir, max_tokens=self.cfg.max_item_tokens
        )
        self.item_vectors[1:] = vectors.to(self.item_vectors)

    def item_embeddings(self) -> torch.Tensor:
        """The projected item table [N + 1, D]: text vector projection (+ ID vector); row 0 zeros."""
        return self._embed(torch.arange(len(self.item_vectors), device=self.item_vectors.device))

    def _embed(self, items: torch.Tensor) -> torch.Tensor:
        """Projected vectors [..., D] of item ids `items` [...] (padding 0 -> zeros): only these rows."""
        out: torch.Tensor = self.project(self.item_vectors[items])  # [..., D]
        if self.item_id is not None:
            out = out + self.item_id(items)
        return out * (items != 0)[..., None]

    def encode(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, D] of the causal backbone over the histories' projected item vectors."""
        inputs = self._embed(items)  # [B, L, D], the history's rows only (not the whole table)
        if self.cfg.input_scale == "token_norm":  # padding rows stay zero
            inputs = inputs * (self.input_norm / inputs.norm(dim=-1, keepdim=True).clamp(min=1e-6))
        # positions count real items only, so a history's states do not depend on its left padding
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)  # [B, L]
        out = self.backbone(inputs_embeds=inputs, attention_mask=mask.long(), position_ids=positions)
        return self.head(out.last_hidden_state)  # type: ignore[no-any-return]
