"""The accuracy-matrix metrics against hand-computed examples."""

import math

import pytest

from paralab.strategies.continual.metrics import continual_metrics

# R[i][j]: accuracy on experience j after training on experience i
MATRIX = [
    [0.6, 0.0, 0.0],
    [0.8, 0.7, 0.0],
    [0.5, 0.6, 0.9],
]


def test_final_accuracy_forgetting_and_bwt_match_the_hand_computation():
    metrics = continual_metrics(MATRIX)
    # final average accuracy: (0.5 + 0.6 + 0.9) / 3
    assert math.isclose(metrics["test/acc"], 2.0 / 3.0)
    # forgetting: exp 0: best before the end 0.8, now 0.5 -> 0.3; exp 1: 0.7 -> 0.6 -> 0.1
    assert math.isclose(metrics["forgetting"], 0.2)
    # BWT: exp 0: 0.5 - 0.6 = -0.1; exp 1: 0.6 - 0.7 = -0.1
    assert math.isclose(metrics["bwt"], -0.1)


def test_forgetting_uses_the_best_earlier_accuracy_not_the_diagonal():
    # exp 0 improves after exp 1 (0.2 -> 0.9), then drops to 0.4: forgetting 0.5, BWT +0.2;
    # exp 1 stays at 0.8: forgetting 0, BWT 0
    metrics = continual_metrics([[0.2, 0.0, 0.0], [0.9, 0.8, 0.0], [0.4, 0.8, 0.7]])
    assert math.isclose(metrics["forgetting"], 0.25)
    assert math.isclose(metrics["bwt"], 0.1)


def test_positive_transfer_gives_negative_forgetting_and_positive_bwt():
    metrics = continual_metrics([[0.5, 0.1], [0.7, 0.9]])
    assert math.isclose(metrics["test/acc"], 0.8)
    assert math.isclose(metrics["forgetting"], -0.2)
    assert math.isclose(metrics["bwt"], 0.2)


def test_a_single_row_has_no_forgetting_or_bwt():
    assert continual_metrics([[0.9, 0.7, 0.8]]) == pytest.approx(
        {"test/acc": 0.8, "test/acc_avg": 0.8}
    )


def test_an_empty_matrix_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        continual_metrics([])
