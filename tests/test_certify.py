"""The certificate: the float32 pass decides outside its band, float64 inside it."""
from __future__ import annotations

import numpy as np
import pytest

from dropnet import certify
from dropnet._kernels import backend

from test_kernels import random_weights


def _net(seed: int = 0, n: int = 12, m: int = 300, d: int = 10, h: int = 20):
    """Weights, rows and the float32 model's output of the identity order (as pred is made)."""
    rng = np.random.default_rng(seed)
    w = random_weights(rng, n, d, h, scale=1.0)
    x = rng.standard_normal((m, d))
    order = np.arange(n)
    pred = backend("reference").network_output(x.astype(np.float32), w.astype(np.float32),
                                               order, order).astype(np.float64)
    return w, x, order, pred


def test_right_answer_is_certified_in_float32_with_the_float64_mse_scale():
    w, x, order, pred = _net()
    tol = certify.tolerance(pred, len(order))
    err, out = certify.check(w, x, order, order, pred, tol)
    assert out.dtype == np.float32  # decided without the float64 pass
    exact = certify.mse(certify.model_output(w, x, order, order), pred)
    assert err <= certify.FLOAT32_DECIDES[0] * tol and exact <= certify.FLOAT32_DECIDES[0] * tol
    assert err == pytest.approx(exact, rel=10, abs=1e-12)  # both at rounding level


def test_wrong_answer_is_refused_in_float32():
    w, x, order, pred = _net()
    swapped = order.copy()
    swapped[[3, 4]] = swapped[[4, 3]]
    tol = certify.tolerance(pred, len(order))
    err, out = certify.check(w, x, swapped, swapped, pred, tol)
    assert out.dtype == np.float32 and err > certify.FLOAT32_DECIDES[1] * tol
    assert err == pytest.approx(certify.mse(certify.model_output(w, x, swapped, swapped), pred),
                                rel=1e-4)


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_an_mse_in_the_band_is_decided_in_float64(scale):
    """A tolerance placed so that the float32 MSE falls inside the band: float64 decides."""
    w, x, order, pred = _net(seed=1)
    swapped = order.copy()
    swapped[[5, 6]] = swapped[[6, 5]]
    err32 = certify.mse(certify.model_output(w, x, swapped, swapped, dtype=np.float32), pred)
    tol = err32 * scale  # err32 / tol = 2, 1, 0.5: all inside (0.25, 2.25]
    err, out = certify.check(w, x, swapped, swapped, pred, tol)
    assert out.dtype == np.float64
    assert err == certify.mse(certify.model_output(w, x, swapped, swapped), pred)


def test_nan_output_goes_to_float64_and_stays_nan():
    w, x, order, pred = _net()
    x = x.copy()
    x[7, 2] = np.nan
    err, out = certify.check(w, x, order, order, pred, certify.tolerance(pred, len(order)))
    assert out.dtype == np.float64 and np.isnan(err)
