import numpy as np

from compression_helps.engine import metrics


def test_compression_ratio_hand_computed():
    sizes = np.array([[100, 80, 20], [300, 200, 50]])
    chosen = np.array([2, 1])
    # (100 + 300) / (20 + 200), not the mean of 5 and 1.5.
    assert metrics.compression_ratio(sizes, chosen) == 400 / 220


def test_compression_ratio_of_originals_is_one():
    sizes = np.array([[100, 80], [300, 200]])
    assert metrics.compression_ratio(sizes, np.array([0, 0])) == 1.0


def test_topk_accuracy():
    ranks = np.array([[1, 3], [2, 1], [7, 5], [1, 1]])
    assert metrics.topk_accuracy(ranks, np.array([0, 0, 0, 0]), 1) == 50.0
    assert metrics.topk_accuracy(ranks, np.array([1, 1, 1, 1]), 1) == 50.0
    assert metrics.topk_accuracy(ranks, np.array([0, 1, 1, 0]), 5) == 100.0
    assert metrics.topk_accuracy(ranks, np.array([0, 0, 0, 0]), 5) == 75.0


def test_bits_per_pixel():
    sizes = np.array([[100, 10], [300, 30]])
    num_pixels = np.array([400, 400])
    # 8 * (10 + 300) bits over 800 pixels.
    assert metrics.bits_per_pixel(sizes, np.array([1, 0]), num_pixels) == 3.1
