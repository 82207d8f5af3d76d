"""The kernels of UFF's losses (kernels/uff_loss.py) against their NumPy twins, and finite-difference
checks of the losses (a layer's whole step: test_uff.py)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edgeff.kernels import reference as ref, uff_loss
from edgeff.model import EPS

SETTINGS = settings(max_examples=25, deadline=None)


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# ---- kernels and their twins ----

@SETTINGS
@given(st.integers(1, 9), st.integers(1, 20), st.floats(0, 0.99), st.integers(0, 2**31))
def test_mask_noise_matches_its_twin(rows, d, rate, seed):
    rng = np.random.default_rng(seed)
    x, m = rand(rng, rows, d), rng.random((rows, d), dtype=np.float32)
    got, want = uff_loss.mask_noise(x, m, rate, np.empty_like(x)), ref.mask_noise(x, m, rate, np.empty_like(x))
    np.testing.assert_array_equal(got, want)
    assert ((got == 0) | (got == x)).all()


def test_mask_noise_masks_about_its_rate():
    rng = np.random.default_rng(1)
    x = np.ones((200, 300), np.float32)
    uff_loss.mask_noise(x, rng.random(x.shape, dtype=np.float32), 0.3, x)
    assert abs((x == 0).mean() - 0.3) < 0.01


@SETTINGS
@given(st.integers(1, 9), st.integers(1, 20), st.integers(0, 2**31))
def test_mse_and_relu_backward_match_their_twins(rows, d, seed):
    rng = np.random.default_rng(seed)
    r, x = rand(rng, rows, d), rand(rng, rows, d)
    got_loss, want_loss = np.empty(rows, np.float32), np.empty(rows)
    got, want = uff_loss.mse_grad(r.copy(), x, got_loss), ref.mse_grad(r.astype(np.float64), x, want_loss)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    c = np.maximum(rand(rng, rows, d), 0)
    np.testing.assert_array_equal(uff_loss.relu_backward(r.copy(), c), ref.relu_backward(r.copy(), c))


@SETTINGS
@given(st.integers(1, 8), st.integers(1, 12), st.floats(0.05, 5.0), st.integers(0, 2**31))
def test_nt_xent_and_unit_rows_backward_match_their_twins(pairs, width, tau, seed):
    rng = np.random.default_rng(seed)
    p = rand(rng, 2 * pairs, width)
    p[0] = 0.0                         # a zero projection stays finite (eps)
    u = p / (np.linalg.norm(p, axis=1, keepdims=True) + np.float32(EPS))
    sim = (u @ u.T).astype(np.float32)
    got_loss, want_loss = np.empty(2 * pairs, np.float32), np.empty(2 * pairs)
    got, want = uff_loss.nt_xent_grad(sim.copy(), tau, got_loss), ref.nt_xent_grad(sim.astype(np.float64), tau,
                                                                                     want_loss)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-4, atol=1e-5)
    du = rand(rng, 2 * pairs, width)
    np.testing.assert_allclose(uff_loss.unit_rows_backward(p, du.copy(), EPS),
                               ref.unit_rows_backward(p, du.astype(np.float64), EPS), rtol=1e-4, atol=1e-4)


def test_nt_xent_refuses_an_odd_row_count():
    with pytest.raises(ValueError, match="even number of rows"):
        uff_loss.nt_xent_grad(np.zeros((3, 3), np.float32), 0.5, np.zeros(3, np.float32))


# ---- finite differences ----

def finite_difference(loss, a, at, h=1e-6):
    """Central differences of loss() in the entries `at` of float64 array a (changed, then restored)."""
    out = []
    for i in at:
        keep = a.flat[i]
        a.flat[i] = keep + h
        up = loss()
        a.flat[i] = keep - h
        down = loss()
        a.flat[i] = keep
        out.append((up - down) / (2 * h))
    return np.array(out)


def mse(r, x):
    loss = np.empty(len(r))
    ref.mse_grad(r.copy(), x, loss)
    return loss.mean()


def nt_xent(p, tau):
    u = p / (np.linalg.norm(p, axis=1, keepdims=True) + EPS)
    loss = np.empty(len(p))
    ref.nt_xent_grad(u @ u.T, tau, loss)
    return loss.mean()


def test_the_mse_gradient_is_its_loss_derivative():
    rng = np.random.default_rng(2)
    r, x = rng.standard_normal((5, 7)), rng.standard_normal((5, 7))
    grad = uff_loss.mse_grad(r.astype(np.float32), x.astype(np.float32), np.empty(5, np.float32))
    np.testing.assert_allclose(grad.ravel(), finite_difference(lambda: mse(r, x), r, range(35)), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("tau", [0.1, 0.5, 2.0])
def test_the_nt_xent_gradient_is_its_loss_derivative(tau):
    """dL/dp = unit_rows_backward(p, (dL/dsim) u): the kernels' chain against the loss's differences."""
    rng = np.random.default_rng(3)
    p = rng.standard_normal((6, 4))
    p32 = p.astype(np.float32)
    u = p32 / (np.linalg.norm(p32, axis=1, keepdims=True) + np.float32(EPS))
    sim = uff_loss.nt_xent_grad((u @ u.T).astype(np.float32), tau, np.empty(6, np.float32))
    grad = uff_loss.unit_rows_backward(p32, (sim @ u).astype(np.float32), EPS)
    np.testing.assert_allclose(grad.ravel(), finite_difference(lambda: nt_xent(p, tau), p, range(24)),
                               rtol=2e-3, atol=1e-5)
