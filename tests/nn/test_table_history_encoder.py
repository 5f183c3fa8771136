"""The causal encoder over another module's item table (Recformer's user-side ID encoder)."""

from __future__ import annotations

import torch

from recsys.nn.table_history_encoder import TableHistoryEncoder


def _encoder() -> tuple[TableHistoryEncoder, torch.Tensor]:
    torch.manual_seed(0)
    table = torch.randn(9, 12)
    table[0] = 0.0
    return TableHistoryEncoder(12, 6, hidden=8, n_layers=2, n_heads=2, dropout=0.0).eval(), table


def test_states_have_the_table_width_and_each_position_sees_only_the_past() -> None:
    encoder, table = _encoder()
    items = torch.tensor([[0, 3, 1, 4, 2], [5, 6, 7, 8, 1]])
    states = encoder(items, table[items])
    assert states.shape == (2, 5, 12)
    later_changed = items.clone()
    later_changed[:, -1] = 7
    again = encoder(later_changed, table[later_changed])
    torch.testing.assert_close(again[:, :-1], states[:, :-1])  # causal: earlier positions do not move
    assert not torch.allclose(again[:, -1], states[:, -1])


def test_left_padding_and_history_longer_than_max_len_do_not_change_the_last_state() -> None:
    encoder, table = _encoder()
    short, padded = torch.tensor([[3, 1, 4]]), torch.tensor([[0, 0, 0, 3, 1, 4]])
    torch.testing.assert_close(encoder(padded, table[padded])[:, -1], encoder(short, table[short])[:, -1])
    history = torch.tensor([[5, 6, 7, 8, 3, 1, 4, 2]])  # 8 items, max_len 6: the last 6 are read
    last6 = history[:, -6:]
    torch.testing.assert_close(encoder(history, table[history])[:, -1], encoder(last6, table[last6])[:, -1])


def test_gradients_reach_the_table_rows_it_read() -> None:
    encoder, table = _encoder()
    table.requires_grad_(True)
    items = torch.tensor([[0, 3, 1]])
    encoder(items, table[items])[:, -1].sum().backward()
    assert table.grad is not None
    read = table.grad.abs().sum(-1) > 0
    assert read.nonzero().flatten().tolist() == [1, 3]  # padding (row 0) and unread rows get none
