"""AUC, GAUC and log loss of labelled predictions on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys.eval.labelled import auc, gauc, labelled_metrics, log_loss


def test_auc_counts_ordered_pairs() -> None:
    # positive/negative pairs: (.9>.8) (.9>.1) (.3<.8) (.3>.1) -> 3 of 4
    assert auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.3, 0.1])) == pytest.approx(0.75)


def test_auc_tie_counts_half() -> None:
    assert auc(np.array([1, 0, 0]), np.array([0.5, 0.5, 0.1])) == pytest.approx(0.75)


def test_gauc_weights_users_by_samples_and_skips_one_label_users() -> None:
    users = np.array([7, 7, 7, 3, 3, 5, 5])
    labels = np.array([1, 0, 0, 1, 0, 1, 1])
    scores = np.array([0.2, 0.1, 0.3, 0.9, 0.1, 0.4, 0.6])
    # user 7: .2 beats .1, loses to .3 -> 0.5 (3 samples); user 3: 1.0 (2 samples); user 5: one label, left out
    assert gauc(labels, scores, users) == pytest.approx((3 * 0.5 + 2 * 1.0) / 5)


def test_gauc_without_any_mixed_user_raises() -> None:
    with pytest.raises(ValueError, match="no user"):
        gauc(np.array([1, 1, 0]), np.array([0.1, 0.2, 0.3]), np.array([1, 1, 2]))


def test_log_loss_by_hand() -> None:
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert log_loss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(expected)


def test_labelled_metrics_keys() -> None:
    out = labelled_metrics(np.array([1, 0]), np.array([0.8, 0.4]), np.array([0, 0]), "test")
    assert set(out) == {"test/auc", "test/gauc", "test/logloss"}
    assert out["test/auc"] == out["test/gauc"] == 1.0
