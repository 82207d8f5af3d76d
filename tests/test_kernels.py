"""Every Numba kernel against its NumPy twin in kernels/reference.py, on random
and edge-case shapes (batch 1, odd widths)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edgeff.kernels import batch, dense, ff_loss, hybrid, local_fields, norm, optim, overlay, softmax
from edgeff.kernels import reference as ref
from edgeff.receptive import layer_fields

shapes = st.tuples(st.integers(1, 17), st.integers(1, 33))
SETTINGS = settings(max_examples=25, deadline=None)


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def close(a, b, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@SETTINGS
@given(shapes, st.integers(1, 19), st.integers(0, 2**31))
def test_dense_forward_and_local_grad(shape, d_out, seed):
    rng = np.random.default_rng(seed)
    b_rows, d_in = shape
    x, w, b = rand(rng, b_rows, d_in), rand(rng, d_in, d_out), rand(rng, d_out)
    out, want = np.empty((b_rows, d_out), np.float32), np.empty((b_rows, d_out))
    close(dense.dense_forward(x, w, b, out), ref.dense_forward(x, w, b, want), rtol=1e-4, atol=1e-5)
    dz = rand(rng, b_rows, d_out)
    gw, gb = np.empty((d_in, d_out), np.float32), np.empty(d_out, np.float32)
    gw_r, gb_r = np.empty((d_in, d_out)), np.empty(d_out)
    dense.local_grad(x, dz, gw, gb)
    ref.local_grad(x, dz, gw_r, gb_r)
    close(gw, gw_r, rtol=1e-4, atol=1e-5)
    close(gb, gb_r, rtol=1e-4, atol=1e-5)
    dense.column_sum(dz, gb)
    close(gb, ref.column_sum(dz, gb_r), rtol=1e-4, atol=1e-5)
    close(dense.add_bias(dz.copy(), b), ref.add_bias(dz.astype(np.float64), b), rtol=1e-6, atol=1e-6)


@SETTINGS
@given(shapes, st.integers(0, 2**31))
def test_length_normalise(shape, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, *shape, scale=3.0)
    x[0] = 0.0  # an all-zero row stays finite (eps)
    out, want = np.empty_like(x), np.empty(shape)
    close(norm.length_normalise(x, out), ref.length_normalise(x, want))
    inplace = x.copy()
    norm.length_normalise(inplace, inplace)
    close(inplace, want)


@SETTINGS
@given(shapes, st.integers(0, 2**31))
def test_standardise(shape, seed):
    rng = np.random.default_rng(seed)
    x, mean, scale = rand(rng, *shape), rand(rng, shape[1]), rand(rng, shape[1], scale=30.0)
    want = ref.standardise(x, mean, scale)
    close(norm.standardise(x, mean, scale), want, rtol=1e-5, atol=1e-4)


@SETTINGS
@given(shapes, st.booleans(), st.floats(0.0, 5.0), st.integers(0, 2**31))
def test_ff_activate_and_loss_grad(shape, mean, theta, seed):
    rng = np.random.default_rng(seed)
    rows, d = shape
    n_pos = int(rng.integers(0, rows + 1))
    z, b = rand(rng, rows, d, scale=2.0), rand(rng, d)
    z_r = z.astype(np.float64)
    h, h_r = np.empty_like(z), np.empty((rows, d))
    g, g_r = np.empty(rows, np.float32), np.empty(rows)
    ff_loss.ff_activate(z, b, h, g, mean)
    ref.ff_activate(z_r, b, h_r, g_r, mean)
    close(z, z_r, rtol=1e-5), close(h, h_r, rtol=1e-5), close(g, g_r, rtol=1e-5)
    loss, loss_r = np.empty(rows, np.float32), np.empty(rows)
    ff_loss.ff_loss_grad(z, g, n_pos, theta, loss, mean)
    ref.ff_loss_grad(z_r, g_r, n_pos, theta, loss_r, mean)
    close(z, z_r, rtol=1e-4, atol=1e-7)
    close(loss, loss_r, rtol=1e-4, atol=1e-6)


def test_ff_loss_is_stable_for_huge_goodness():
    h = np.full((2, 3), 1e3, np.float32)
    g = np.array([3e6, 3e6], np.float32)
    loss = np.empty(2, np.float32)
    ff_loss.ff_loss_grad(h, g, 1, 2.0, loss)
    assert np.isfinite(h).all() and np.isfinite(loss).all()
    assert loss[0] == 0.0 and loss[1] == pytest.approx(3e6 - 2.0, rel=1e-6)


@SETTINGS
@given(st.integers(1, 9), st.integers(2, 11), st.integers(1, 25), st.booleans(), st.integers(0, 2**31))
def test_label_goodness_matches_explicit_overlays(b_rows, c, d, mean, seed):
    rng = np.random.default_rng(seed)
    z0, wl, b = rand(rng, b_rows, d), rand(rng, c, d), rand(rng, d)
    inv = np.abs(rand(rng, b_rows)) + 0.1
    out, want = np.empty((b_rows, c), np.float32), np.empty((b_rows, c))
    ff_loss.label_goodness(z0, wl, inv, b, out, mean)
    ref.label_goodness(z0, wl, inv, b, want, mean)
    close(out, want, rtol=1e-4, atol=1e-5)


def _overlaid(x0, labels, lo, c, value, eps=1e-4):
    """The plain way: each row overlaid with its label, length-normalised; and 1/(norm + eps)."""
    b = len(x0)
    rows = np.repeat(x0[None], len(labels) // b, 0).reshape(-1, x0.shape[1]).astype(np.float64)
    rows[:, lo:lo + c] = 0.0
    rows[np.arange(len(labels)), lo + labels] = value
    inv = 1.0 / (np.linalg.norm(rows[:b], axis=1) + eps)
    return rows * np.tile(inv, len(labels) // b)[:, None], inv.astype(np.float32)


@SETTINGS
@given(st.integers(1, 9), st.integers(1, 3), st.integers(2, 6), st.integers(0, 9), st.integers(1, 21),
       st.integers(0, 2**31))
def test_overlay_forward_and_gradient_equal_the_plain_overlaid_rows(b, k, c, extra, h, seed):
    """One product on B rows plus label rows gives what k*B overlaid rows @ w give, forward and back."""
    rng = np.random.default_rng(seed)
    d, lo, value = c + extra, int(rng.integers(0, extra + 1)), 8.0
    x0, w = np.abs(rand(rng, b, d)), rand(rng, d, h)
    x0[:, lo:lo + c] = 0.0
    labels = rng.integers(0, c, k * b).astype(np.int64)
    rows, inv = _overlaid(x0, labels, lo, c, value)
    wl = (value * w[lo:lo + c]).astype(np.float32)
    z, want = np.empty((k * b, h), np.float32), np.empty((k * b, h))
    overlay.overlay_pre(x0 @ w, wl, inv, labels, z)
    ref.overlay_pre(x0 @ w, wl, inv, labels, want)
    close(z, want, rtol=1e-4, atol=1e-5)
    close(z, rows @ w, rtol=1e-4, atol=1e-5)

    dz = rand(rng, k * b, h)
    plain_gw, plain_gb = rows.T @ dz, dz.sum(0)
    gwl, gb, dz_k = np.empty((c, h), np.float32), np.empty(h, np.float32), dz.copy()
    overlay.overlay_grad(dz_k, inv, labels, value, gwl, gb)
    gwl_r, gb_r, dz_r = np.empty((c, h)), np.empty(h), dz.astype(np.float64)
    ref.overlay_grad(dz_r, inv, labels, value, gwl_r, gb_r)
    close(gb, gb_r, rtol=1e-4, atol=1e-5), close(gwl, gwl_r, rtol=1e-4, atol=1e-5)
    close(dz_k[:b], dz_r[:b], rtol=1e-4, atol=1e-5)
    gw = x0.T @ dz_k[:b]
    gw[lo:lo + c] += gwl
    close(gw, plain_gw, rtol=1e-4, atol=1e-4)
    close(gb, plain_gb, rtol=1e-4, atol=1e-5)


@SETTINGS
@given(st.integers(1, 20), st.integers(2, 12), st.integers(0, 2**31))
def test_hardest_wrong_label(rows, c, seed):
    rng = np.random.default_rng(seed)
    scores = rand(rng, rows, c)
    y = rng.integers(0, c, rows).astype(np.int64)
    out, want = np.empty(rows, np.int64), np.empty(rows, np.int64)
    ff_loss.hardest_wrong_label(scores, y, out)
    ref.hardest_wrong_label(scores, y, want)
    np.testing.assert_array_equal(out, want)
    assert (out != y).all()


@SETTINGS
@given(st.integers(1, 2000), st.integers(1, 5), st.floats(0.0, 0.1), st.integers(0, 2**31))
def test_optimisers(n, steps, wd, seed):
    rng = np.random.default_rng(seed)
    w0 = rand(rng, n)
    w, w_r = w0.copy(), w0.astype(np.float64)
    m, v, m_r, v_r = np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n), np.zeros(n)
    s, s_r = np.zeros(n, np.float32), np.zeros(n)
    w2, w2_r = w0.copy(), w0.astype(np.float64)
    for t in range(1, steps + 1):
        g = rand(rng, n)
        optim.adam_step(w, g, m, v, t, 0.01, weight_decay=wd)
        ref.adam_step(w_r, g, m_r, v_r, t, 0.01, weight_decay=wd)
        optim.sgd_momentum_step(w2, g, s, 0.05, 0.9, wd)
        ref.sgd_momentum_step(w2_r, g, s_r, 0.05, 0.9, wd)
    close(w, w_r, rtol=1e-4, atol=1e-5)
    close(w2, w2_r, rtol=1e-4, atol=1e-5)
    assert not np.array_equal(w, w0)


def test_optimiser_warm_up_when_the_pool_never_pays(monkeypatch):
    """A tuning of 'never' (2^62) once made warm_up allocate an array of that many parameters."""
    from edgeff import tuning
    monkeypatch.setattr(optim, "PARALLEL_FROM", tuning.NEVER)
    optim.warm_up()
    w = np.ones(5, np.float32)
    optim.adam_step(w, np.ones(5, np.float32), np.zeros(5, np.float32), np.zeros(5, np.float32), 1, 0.5)
    np.testing.assert_allclose(w, 0.5, rtol=1e-4)           # one Adam step moves each weight by lr


@SETTINGS
@given(st.integers(1, 3000), st.floats(0.0, 0.1), st.integers(0, 2**31))
def test_optimiser_variants_agree_bit_for_bit(n, wd, seed):
    """The tuning picks serial or parallel per machine (edgeff/tuning.py): that choice must not
    change a run's bits, nor whether a zero denominator raises (NumPy's error model in both)."""
    rng = np.random.default_rng(seed)
    w, g, m, v = (rand(rng, n) * np.float32(10.0 ** rng.integers(-30, 3)) for _ in range(4))
    v = np.abs(v)
    g[: n // 3] = 0.0                                 # 0/0 with eps 0 below: nan, not ZeroDivisionError
    w[: n // 3] = m[: n // 3] = v[: n // 3] = 0.0
    args = np.float32(0.01), np.float32(0.9), np.float32(0.999), np.float32(1e-8), np.float32(wd)
    outs = []
    for variant in (False, True):
        ws, ms, vs = w.copy(), m.copy(), v.copy()
        optim._ADAM[variant](ws, g, ms, vs, *args)
        w0 = ws.copy()
        optim._ADAM[variant](w0, g, ms.copy(), vs.copy(), args[0], args[1], args[2], np.float32(0.0), args[4])
        sw, sv = w.copy(), m.copy()
        optim._SGD[variant](sw, g, sv, np.float32(0.05), np.float32(0.9), np.float32(wd))
        outs.append([a.view(np.int32) for a in (ws, ms, vs, w0, sw, sv)])
    for serial, parallel in zip(*outs):
        np.testing.assert_array_equal(serial, parallel)
    assert np.isnan(outs[0][3].view(np.float32)[: n // 3]).all()


@SETTINGS
@given(st.integers(1, 20), st.integers(2, 12), st.integers(0, 2**31))
def test_softmax_xent_grad(rows, c, seed):
    rng = np.random.default_rng(seed)
    logits = rand(rng, rows, c, scale=10.0)
    y = rng.integers(0, c, rows).astype(np.int64)
    d, d_r = logits.copy(), logits.astype(np.float64)
    loss, loss_r = np.empty(rows, np.float32), np.empty(rows)
    softmax.softmax_xent_grad(d, y, loss)
    ref.softmax_xent_grad(d_r, y, loss_r)
    close(d, d_r, rtol=1e-4, atol=1e-6)
    close(loss, loss_r, rtol=1e-4, atol=1e-5)


@SETTINGS
@given(st.integers(1, 6), st.integers(1, 7), st.integers(0, 3), st.sampled_from([np.uint8, np.float32]),
       st.integers(0, 2**31))
def test_gather_shifted(h, w, shift, dtype, seed):
    rng = np.random.default_rng(seed)
    src = rng.integers(0, 256, (5, h * w)).astype(dtype)
    idx = rng.integers(0, 5, 4).astype(np.int64)
    u = rng.random(8)
    out, want = np.full((4, h * w + 2), 5.0, np.float32), np.full((4, h * w + 2), 5.0)
    batch.gather_shifted(src, idx, u, shift, (h, w), 1 / 255, out)
    ref.gather_shifted(src, idx, u, shift, (h, w), 1 / 255, want)
    close(out, want)
    assert (out[:, h * w:] == 5.0).all()              # label columns after the image untouched
    if shift == 0:                                    # no move: the plain gather
        plain = np.empty_like(out)
        batch.gather_scaled(src, idx, 1 / 255, plain)
        close(out[:, :h * w], plain[:, :h * w])


@SETTINGS
@given(st.integers(1, 30), st.integers(1, 20), st.integers(0, 4), st.sampled_from([np.uint8, np.float32]),
       st.integers(0, 2**31))
def test_gather_and_overlay(n, d, extra, dtype, seed):
    rng = np.random.default_rng(seed)
    src = (rng.integers(0, 256, (n, d)) if dtype == np.uint8 else rng.standard_normal((n, d))).astype(dtype)
    idx = rng.integers(0, n, 7).astype(np.int64)
    out, want = np.full((7, d + extra), 5.0, np.float32), np.full((7, d + extra), 5.0)
    batch.gather_scaled(src, idx, 1 / 255, out)
    ref.gather_scaled(src, idx, 1 / 255, want)
    close(out, want)
    c = min(d + extra, 3)
    labels = rng.integers(-1, c, 7).astype(np.int64)
    batch.overlay_labels(out, labels, d + extra - c, c, 2.5)
    ref.overlay_labels(want, labels, d + extra - c, c, 2.5)
    close(out, want)


def test_wrappers_reject_bad_shapes_and_dtypes():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="do not chain"):
        dense.dense_forward(x, np.zeros((2, 5), np.float32), np.zeros(5, np.float32), np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match="float32"):
        norm.length_normalise(x.astype(np.float64), x)
    with pytest.raises(ValueError, match="outside width"):
        batch.overlay_labels(x, np.zeros(4, np.int64), 2, 2, 1.0)
    with pytest.raises(ValueError, match="t counts steps"):
        optim.adam_step(x, x, x, x, 0, 0.1)


@SETTINGS
@given(st.integers(1, 50), st.integers(2, 12), st.integers(0, 2**31))
def test_random_wrong_label(rows, c, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, rows).astype(np.int64)
    u = rng.random(rows)
    u[0] = np.nextafter(1.0, 0.0)  # the edge of [0, 1)
    out, want = np.empty(rows, np.int64), np.empty(rows, np.int64)
    ff_loss.random_wrong_label(y, u, c, out)
    ref.random_wrong_label(y, u, c, want)
    np.testing.assert_array_equal(out, want)
    assert (out != y).all() and (out >= 0).all() and (out < c).all()


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 12), st.integers(1, 12), st.integers(1, 3), st.integers(0, 6),
       st.booleans(), st.integers(0, 2**31))
def test_hybrid_kernel_matches_its_numpy_twin(b, height, width, channels, passes, as_uint8, seed):
    """Up to 6 passes every blurred value is a multiple of 4**-12 = 2**-24: exact in float32, so
    the masks must be equal to the bit."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, 256, (7, height * width * channels))
    src = src.astype(np.uint8) if as_uint8 else (src / 255).astype(np.float32)
    idx = rng.integers(0, 7, b).astype(np.int64)
    partner_u, u = rng.random(b, dtype=np.float32), rng.random((b, height * width), dtype=np.float32)
    got, want = np.empty((b, src.shape[1]), np.float32), np.empty((b, src.shape[1]), np.float32)
    masks, masks_ref = u.copy(), u.copy()
    hybrid.hybrid_images(src, idx, partner_u, masks, (height, width), 0.5, got, passes)
    ref.hybrid_images(src, idx, partner_u, masks_ref, (height, width), 0.5, want, passes)
    np.testing.assert_array_equal(masks, masks_ref)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("passes, alike", [(2, 0.75), (6, 0.85)])
def test_masks_are_regions_mixing_two_real_images(passes, alike):
    """Neighbouring mask pixels agree more often than random bits' 0.5, the more the more blurs."""
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (50, 28 * 28)).astype(np.uint8)
    idx = np.arange(20, dtype=np.int64)
    partner_u, masks = rng.random(20, dtype=np.float32), rng.random((20, 28 * 28), dtype=np.float32)
    out = np.empty((20, 28 * 28), np.float32)
    hybrid.hybrid_images(src, idx, partner_u, masks, (28, 28), 1.0, out, passes)
    m = masks.reshape(20, 28, 28)
    assert set(np.unique(m)) == {0.0, 1.0} and 0.3 < m.mean() < 0.7
    assert (m[:, :, 1:] == m[:, :, :-1]).mean() > alike and (m[:, 1:] == m[:, :-1]).mean() > alike
    partner = (partner_u * 50).astype(np.int64)
    np.testing.assert_array_equal(out, np.where(masks > 0, src[idx], src[partner]))


@pytest.mark.parametrize("image_shape,widths", [((28, 28), (2048, 1980, 2048)), ((8, 8), (32, 18, 8)),
                                                ((12, 9, 3), (48, 27, 12)), ((10, 10), (16, 9))])
def test_local_fields_kernel_matches_its_numpy_twin(image_shape, widths):
    """keep_fields zeroes exactly the entries its NumPy twin's mask leaves out, in every layer."""
    d_in = [int(np.prod(image_shape))] + list(widths[:-1])
    for k, f in enumerate(layer_fields(image_shape, widths)):
        assert f is not None
        g = np.random.default_rng(k).standard_normal((d_in[k], widths[k])).astype(np.float32)
        np.testing.assert_array_equal(local_fields.keep_fields(g.copy(), f), ref.keep_fields(g.copy(), f))
        assert ref.field_mask(f, d_in[k]).sum(axis=0).tolist() == [f.fan_in] * widths[k]


def test_local_fields_are_hintons_windows():
    """28 x 28: layer 1's cell (1, 2) sees rows 6-15 and columns 12-21; layer 2's cell (0, 1) sees
    layer 1's cells (0-1, 1-2), all 128 units of each; layer 3 on a 2 x 2 grid; layer 4 is full."""
    f1, f2, f3, f4 = layer_fields((28, 28), (2048, 1980, 2048, 100))
    assert (f1.grid, f1.per_out, f1.stride, f1.field) == (4, 128, (6, 6), (10, 10))
    seen = ref.field_mask(f1, 784)[:, (1 * 4 + 2) * 128].reshape(28, 28)
    rows, cols = np.nonzero(seen)
    assert (rows.min(), rows.max(), cols.min(), cols.max(), seen.sum()) == (6, 15, 12, 21, 100)
    seen = ref.field_mask(f2, 2048)[:, (0 * 3 + 1) * 220].reshape(4, 4, 128)
    assert seen.all(axis=2).tolist() == (np.add.outer([1, 1, 0, 0], [0, 1, 1, 0]) == 2).tolist()
    assert (f3.grid, f3.per_in, f3.per_out) == (2, 220, 512) and f4 is None
