"""A pretrained encoder's position table extended: the old positions unchanged (outputs on short
inputs identical), the new ones copies of known positions, and longer inputs encoded."""

from __future__ import annotations

import pytest
import torch

from recsys.nn.hf_positions import extend_positions


def tiny_bert(max_positions: int = 16) -> object:
    transformers = pytest.importorskip("transformers", reason="needs the 'text' extra")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
    )
    return transformers.BertModel(config).eval()


def test_short_inputs_encode_exactly_as_before_and_long_ones_now_fit() -> None:
    model = tiny_bert(16)
    ids = torch.randint(5, 100, (2, 12))
    before = model(input_ids=ids).last_hidden_state  # type: ignore[operator]
    old = model.embeddings.position_embeddings.weight.clone()  # type: ignore[attr-defined]
    extend_positions(model, 40)
    table = model.embeddings.position_embeddings.weight  # type: ignore[attr-defined]
    assert table.shape == (40, 32) and model.config.max_position_embeddings == 40  # type: ignore[attr-defined]
    torch.testing.assert_close(table[:16], old)
    torch.testing.assert_close(table[16:32], old)  # row i = old row i mod 16
    torch.testing.assert_close(table[32:], old[:8])
    torch.testing.assert_close(model(input_ids=ids).last_hidden_state, before)  # type: ignore[operator]
    long = model(input_ids=torch.randint(5, 100, (2, 40))).last_hidden_state  # type: ignore[operator]
    assert long.shape == (2, 40, 32)
    long.sum().backward()
    assert table.grad is not None and table.grad[32:].abs().sum() > 0  # the new rows train


def test_no_op_when_the_table_is_long_enough_and_a_clear_error_without_one() -> None:
    model = tiny_bert(16)
    table = model.embeddings.position_embeddings  # type: ignore[attr-defined]
    extend_positions(model, 10)
    assert model.embeddings.position_embeddings is table  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="no learned absolute position table"):
        extend_positions(torch.nn.Linear(2, 2), 40)
