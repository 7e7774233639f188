"""The stream app's prediction smoother (the scripts themselves run in tests/test_readme.py)."""

import numpy as np

from tsm.streaming.app import PredictionSmoother


def test_smoother_waits_for_agreeing_frames():
    smoother = PredictionSmoother(window=1, agree=3)
    a, b = np.array([0.9, 0.1]), np.array([0.2, 0.8])
    shown = [smoother.update(p)[0] for p in (a, a, b, b, a, b, b, b, b)]
    assert shown == [0, 0, 0, 0, 0, 0, 0, 1, 1]  # the first streak of b is broken before it reaches 3


def test_smoother_averages_the_window():
    smoother = PredictionSmoother(window=2, agree=1)
    smoother.update(np.array([1.0, 0.0]))
    label, mean = smoother.update(np.array([0.2, 0.8]))
    np.testing.assert_allclose(mean, [0.6, 0.4])
    assert label == 0
