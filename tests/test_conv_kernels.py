"""kernels/conv.py against its NumPy twins (both methods, on random and edge-case shapes),
the twins' gradients against finite differences of their forward, and the wrappers' checks."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edgeff.kernels import blas, conv, conv_direct, conv_gemm, conv_threads
from edgeff.kernels import reference as ref

SETTINGS = settings(max_examples=30, deadline=None)


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@st.composite
def conv_shapes(draw):
    """(x shape, w shape, stride, pad, groups): kernels 1..3 (also non-square), stride 1..2,
    pad 0..2, groups 1, 2 or depthwise, odd image sizes, down to N=1 and a 1x1 output."""
    groups = draw(st.sampled_from([1, 2, "depthwise"]))
    cg_in = 1 if groups == "depthwise" else draw(st.integers(1, 3))
    groups = draw(st.integers(1, 4)) if groups == "depthwise" else groups
    cg_out = draw(st.integers(1, 3))
    kh, kw, stride, pad = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * pad), 9))
    w = draw(st.integers(max(1, kw - 2 * pad), 9))
    return (draw(st.integers(1, 3)), groups * cg_in, h, w), (groups * cg_out, cg_in, kh, kw), stride, pad, groups


def arrays(rng, x_shape, w_shape, stride, pad):
    oh, ow = conv.conv2d_output_size(x_shape[2], x_shape[3], w_shape[2], w_shape[3], stride, pad)
    y_shape = (x_shape[0], w_shape[0], oh, ow)
    return rand(rng, *x_shape), rand(rng, *w_shape), rand(rng, w_shape[0]), rand(rng, *y_shape)


def gemm_scratch(x_shape, w_shape, stride, pad, groups):
    return np.empty(conv_gemm.GemmPlan(x_shape, w_shape, stride, pad, groups, None).size, np.float32)


@SETTINGS
@given(conv_shapes(), st.booleans(), st.integers(0, 2**31))
def test_conv_kernels_match_the_twins(shapes, bias, seed):
    """The public calls (whichever method they pick) and both methods themselves."""
    x_shape, w_shape, stride, pad, groups = shapes
    x, w, b, dy = arrays(np.random.default_rng(seed), x_shape, w_shape, stride, pad)
    b = b if bias else None
    scratch = np.empty(conv.conv2d_scratch_size(x_shape, w_shape, stride, pad, groups), np.float32)

    want_y = ref.conv2d_forward(x, w, b, stride, pad, groups, np.empty(dy.shape))
    want_gw, want_gb = ref.conv2d_weight_grad(x, dy, stride, pad, groups, np.empty(w.shape), np.empty(w.shape[0]))
    want_dx = ref.conv2d_input_grad(dy, w, stride, pad, groups, np.empty(x.shape))

    y, gw, gb, dx = np.empty_like(dy), np.empty_like(w), np.empty(w.shape[0], np.float32), np.empty_like(x)
    close(conv.conv2d_forward(x, w, b, stride, pad, groups, y, scratch), want_y)
    conv.conv2d_weight_grad(x, dy, stride, pad, groups, gw, gb, scratch)
    close(gw, want_gw), close(gb, want_gb)
    close(conv.conv2d_input_grad(dy, w, stride, pad, groups, dx, scratch), want_dx)

    conv_direct.forward(x, w, conv._NO_BIAS, stride, pad, y)
    close(y, ref.conv2d_forward(x, w, None, stride, pad, groups, np.empty(dy.shape)))
    conv_direct.weight_grad(x, dy, stride, pad, gw)
    close(gw, want_gw)
    conv_direct.input_grad(dy, w, stride, pad, dx)
    close(dx, want_dx)

    gemm = gemm_scratch(x_shape, w_shape, stride, pad, groups)
    conv_gemm.forward(x, w, None, stride, pad, groups, y, gemm)
    close(y, ref.conv2d_forward(x, w, None, stride, pad, groups, np.empty(dy.shape)))
    conv_gemm.weight_grad(x, dy, stride, pad, groups, gw, gemm)
    close(gw, want_gw)
    conv_gemm.input_grad(dy, w, stride, pad, groups, dx, gemm)
    close(dx, want_dx)


@pytest.mark.parametrize("hw, kernel, stride, pad, channel_major", [
    ((7, 6), 3, 1, 1, False), ((7, 6), 1, 1, 0, False), ((7, 6), 3, 2, 2, True), ((1, 2), 1, 1, 0, True)])
def test_gemm_method_in_several_tiles_of_samples(monkeypatch, hw, kernel, stride, pad, channel_major):
    """Five samples in tiles of two (the last tile short) give what one tile gives, with the weight
    gradient summed per sample or (few output pixels) taken channel-major."""
    rng = np.random.default_rng(1)
    x_shape, w_shape = (5, 4, *hw), (6, 2, kernel, kernel)
    x, w, _, dy = arrays(rng, x_shape, w_shape, stride, pad)
    one_sample = (4 * kernel * kernel + 6) * dy.shape[2] * dy.shape[3]
    monkeypatch.setattr(conv_gemm, "l2_cache_bytes", lambda: 4 * 2 * one_sample)
    plan = conv_gemm.GemmPlan(x_shape, w_shape, stride, pad, 2, None)
    assert (plan.tile, plan.channel_major) == (2, channel_major)
    scratch = gemm_scratch(x_shape, w_shape, stride, pad, 2)
    y, gw, dx = np.empty_like(dy), np.empty_like(w), np.empty_like(x)
    conv_gemm.forward(x, w, None, stride, pad, 2, y, scratch)
    conv_gemm.weight_grad(x, dy, stride, pad, 2, gw, scratch)
    conv_gemm.input_grad(dy, w, stride, pad, 2, dx, scratch)
    close(y, ref.conv2d_forward(x, w, None, stride, pad, 2, np.empty(dy.shape)))
    close(gw, ref.conv2d_weight_grad(x, dy, stride, pad, 2, np.empty(w.shape), None)[0])
    close(dx, ref.conv2d_input_grad(dy, w, stride, pad, 2, np.empty(x.shape)))


def test_forward_by_hand():
    """A 2x2 kernel of ones over a 3x3 image sums each window; padding adds zeros."""
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    w = np.ones((1, 1, 2, 2), np.float32)
    y = conv.conv2d_forward(x, w, np.array([0.5], np.float32), 1, 0, 1, np.empty((1, 1, 2, 2), np.float32),
                            np.empty(conv.conv2d_scratch_size(x.shape, w.shape, 1, 0, 1), np.float32))
    np.testing.assert_array_equal(y[0, 0], [[8.5, 12.5], [20.5, 24.5]])
    y = ref.conv2d_forward(x, w, None, 2, 1, 1, np.empty((1, 1, 2, 2)))
    np.testing.assert_array_equal(y[0, 0], [[0, 1 + 2], [3 + 6, 4 + 5 + 7 + 8]])


@settings(max_examples=10, deadline=None)
@given(conv_shapes(), st.integers(0, 2**31))
def test_gradients_match_finite_differences(shapes, seed):
    """With loss = sum(r * conv(x, w) + b), the twins' (float64) and the kernels' weight, bias and
    input gradients equal central differences of the twin's forward, entry by entry."""
    x_shape, w_shape, stride, pad, groups = shapes
    rng = np.random.default_rng(seed)
    x, w, b, r = (a.astype(np.float64) for a in arrays(rng, x_shape, w_shape, stride, pad))

    def loss(x, w, b):
        return float((r * ref.conv2d_forward(x, w, b, stride, pad, groups, np.empty(r.shape))).sum())

    def numeric(a, f, eps=1e-3):
        g = np.empty_like(a)
        for idx in np.ndindex(a.shape):
            saved = a[idx]
            a[idx] = saved + eps
            up = f()
            a[idx] = saved - eps
            g[idx] = (up - f()) / (2 * eps)
            a[idx] = saved
        return g

    want_gw, want_gb, want_dx = numeric(w, lambda: loss(x, w, b)), numeric(b, lambda: loss(x, w, b)), \
        numeric(x, lambda: loss(x, w, b))
    gw, gb = ref.conv2d_weight_grad(x, r, stride, pad, groups, np.empty(w.shape), np.empty(b.shape))
    np.testing.assert_allclose(gw, want_gw, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gb, want_gb, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ref.conv2d_input_grad(r, w, stride, pad, groups, np.empty(x.shape)), want_dx,
                               rtol=1e-6, atol=1e-6)

    x32, w32, r32 = x.astype(np.float32), w.astype(np.float32), r.astype(np.float32)
    scratch = np.empty(conv.conv2d_scratch_size(x_shape, w_shape, stride, pad, groups), np.float32)
    gw32, gb32, dx32 = np.empty_like(w32), np.empty(b.shape, np.float32), np.empty_like(x32)
    conv.conv2d_weight_grad(x32, r32, stride, pad, groups, gw32, gb32, scratch)
    conv.conv2d_input_grad(r32, w32, stride, pad, groups, dx32, scratch)
    close(gw32, want_gw), close(gb32, want_gb), close(dx32, want_dx)


def _f32(*shape):
    return np.zeros(shape, np.float32)


@pytest.mark.parametrize("call, message", [
    (lambda: conv.conv2d_forward(_f32(2, 3, 5, 5).astype(np.float64), _f32(4, 3, 3, 3), None, 1, 1, 1,
                                 _f32(2, 4, 5, 5), _f32(10**4)), "x must be a C-contiguous 4-D float32"),
    (lambda: conv.conv2d_forward(_f32(2, 3, 5, 5)[:, :, ::2], _f32(4, 3, 3, 3), None, 1, 1, 1,
                                 _f32(2, 4, 3, 5), _f32(10**4)), "x must be a C-contiguous"),
    (lambda: conv.conv2d_forward(_f32(3, 5, 5), _f32(4, 3, 3, 3), None, 1, 1, 1, _f32(2, 4, 5, 5)), "4-D"),
    (lambda: conv.conv2d_forward(_f32(2, 3, 5, 5), _f32(4, 2, 3, 3), None, 1, 1, 1,
                                 _f32(2, 4, 5, 5), _f32(10**4)), "do not chain"),
    (lambda: conv.conv2d_forward(_f32(2, 3, 5, 5), _f32(4, 3, 3, 3), None, 1, 1, 1,
                                 _f32(2, 4, 4, 5), _f32(10**4)), "do not chain"),
    (lambda: conv.conv2d_forward(_f32(2, 3, 5, 5), _f32(4, 3, 3, 3), _f32(3), 1, 1, 1,
                                 _f32(2, 4, 5, 5), _f32(10**4)), "one entry per output channel"),
    (lambda: conv.conv2d_forward(_f32(2, 3, 5, 5), _f32(4, 1, 3, 3), None, 1, 1, 2,
                                 _f32(2, 4, 5, 5)), "groups=2 must divide"),
    (lambda: conv.conv2d_forward(_f32(2, 3, 2, 2), _f32(4, 3, 3, 3), None, 1, 0, 1,
                                 _f32(2, 4, 1, 1)), "does not fit a 2x2 image"),
    (lambda: conv.conv2d_forward(_f32(2, 3, 5, 5), _f32(4, 3, 3, 3), None, 0, 1, 1,
                                 _f32(2, 4, 5, 5)), "stride 0"),
    (lambda: conv.conv2d_forward(_f32(2, 3, 5, 5), _f32(4, 3, 3, 3), None, 1, -1, 1,
                                 _f32(2, 4, 3, 3)), "pad -1"),
    (lambda: conv.conv2d_forward(_f32(0, 3, 5, 5), _f32(4, 3, 3, 3), None, 1, 1, 1,
                                 _f32(0, 4, 5, 5)), "empty dimension"),
    (lambda: conv.conv2d_forward(_f32(2, 3, 5, 5), _f32(4, 3, 0, 3), None, 1, 1, 1,
                                 _f32(2, 4, 5, 5)), "sizes >= 1"),
    (lambda: conv.conv2d_forward(_f32(2, 3, 5, 5), _f32(4, 3, 3, 3), None, 1.5, 1, 1,
                                 _f32(2, 4, 5, 5)), "must be integers"),
    (lambda: conv.conv2d_forward(_f32(2, 3, 5, 5), _f32(4, 3, 3, 3), None, 1, 1, 1,
                                 _f32(2, 4, 5, 5)), "needs scratch of"),
    (lambda: conv.conv2d_forward(_f32(2, 3, 5, 5), _f32(4, 3, 3, 3), None, 1, 1, 1,
                                 _f32(2, 4, 5, 5), _f32(10)), "scratch has 10 float32"),
    (lambda: conv.conv2d_weight_grad(_f32(2, 3, 5, 5), _f32(2, 4, 4, 4), 1, 1, 1, _f32(4, 3, 3, 3),
                                     None, _f32(10**4)), "do not chain"),
    (lambda: conv.conv2d_weight_grad(_f32(2, 3, 5, 5), _f32(2, 4, 5, 5), 1, 1, 1, _f32(4, 3, 3, 3),
                                     _f32(5), _f32(10**4)), "gb"),
    (lambda: conv.conv2d_input_grad(_f32(2, 4, 5, 5), _f32(4, 3, 3, 3).astype(np.float16), 1, 1, 1,
                                    _f32(2, 3, 5, 5), _f32(10**4)), "w must be"),
    (lambda: conv.conv2d_input_grad(_f32(2, 4, 5, 5), [[1.0]], 1, 1, 1, _f32(2, 3, 5, 5)), "got list"),
])
def test_wrappers_reject_bad_shapes_and_dtypes(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_scratch_sizes(monkeypatch):
    """Depthwise needs none; a gemm conv declares, per thread, a tile's columns, one padded sample,
    the tile's weight gradients and its share's, the tile as many samples as fit their columns and
    output in the thread's part of L2."""
    monkeypatch.setattr(conv_gemm, "l2_cache_bytes", lambda: 2**20)
    monkeypatch.setattr(conv_gemm, "l2_sharers", lambda: 1)
    assert conv.conv2d_scratch_size((128, 64, 14, 14), (64, 1, 3, 3), 1, 1, 64) == 0
    tile = 2**18 // ((32 * 9 + 64) * 14 * 14)   # 3 samples
    size = conv.conv2d_scratch_size((128, 32, 14, 14), (64, 32, 3, 3), 1, 1, 1, workers=1)  # channel-major weight grad
    assert size == tile * 32 * 9 * 14 * 14 + 32 * 16 * 16 + 64 * (tile * 14 * 14 + 32 * 9) + 64 * 32 * 9
    assert size * 4 < 2**20 + 32 * 16 * 16 * 4 + 2 * 64 * 32 * 9 * 4   # about one L2, whatever the batch
    assert conv.conv2d_scratch_size((128, 32, 14, 14), (64, 32, 3, 3), 1, 1, 1, workers=2) == 2 * size
    monkeypatch.setattr(conv_gemm, "l2_sharers", lambda: 2)        # two threads on one L2: half each
    assert conv.conv2d_scratch_size((128, 32, 14, 14), (64, 32, 3, 3), 1, 1, 1, workers=2) < 2 * size
    monkeypatch.setattr(conv_gemm, "l2_sharers", lambda: 1)
    tile = 2**18 // ((64 + 128) * 14 * 14)
    pointwise = conv.conv2d_scratch_size((128, 64, 14, 14), (128, 64, 1, 1), 1, 0, 1, workers=1)   # no columns
    assert pointwise == 64 * 14 * 14 + tile * 128 * 64 + 128 * 64
    first = conv.conv2d_scratch_size((128, 1, 28, 28), (32, 1, 3, 3), 1, 1, 1, workers=1)   # per-sample weight grads
    tile = 2**18 // ((9 + 32) * 28 * 28)
    assert first == tile * 9 * 28 * 28 + 30 * 30 + tile * 32 * 9 + 32 * 9
    assert conv.conv2d_scratch_size((128, 1, 28, 28), (32, 1, 3, 3), 1, 1, 1) == \
        conv.conv2d_scratch_size((128, 1, 28, 28), (32, 1, 3, 3), 1, 1, 1, workers=blas.cores())


@pytest.mark.parametrize("n, workers", [(5, 1), (5, 2), (5, 3), (1, 2), (8, 4)])
@pytest.mark.parametrize("kernel, stride, pad, groups", [(3, 1, 1, 1), (1, 1, 0, 1), (3, 2, 1, 2)])
def test_the_batch_shared_among_threads_gives_what_one_thread_gives(monkeypatch, n, workers, kernel, stride, pad,
                                                                    groups):
    """A share of the samples per BLAS thread (5 samples on 3 threads: 2 + 2 + 1; 1 sample: one
    share), each on its own thread and part of the scratch, weight gradients summed over the shares;
    scratch sized for fewer threads runs on one; BLAS's thread count is as before afterwards."""
    rng = np.random.default_rng(n * workers)
    x_shape, w_shape = (n, 4, 7, 6), (6, 4 // groups, kernel, kernel)
    x, w, b, dy = arrays(rng, x_shape, w_shape, stride, pad)
    want = (ref.conv2d_forward(x, w, b, stride, pad, groups, np.empty(dy.shape)),
            ref.conv2d_weight_grad(x, dy, stride, pad, groups, np.empty(w.shape), None)[0],
            ref.conv2d_input_grad(dy, w, stride, pad, groups, np.empty(x.shape)))
    before = blas.blas_threads()
    monkeypatch.setattr(conv_threads, "blas_threads", lambda: workers)
    got = {}
    for planned in (workers, 1):
        scratch = np.full(conv_gemm.scratch_size(x_shape, w_shape, stride, pad, groups, planned), np.nan, np.float32)
        y, gw, dx = np.empty_like(dy), np.empty_like(w), np.empty_like(x)
        conv.conv2d_forward(x, w, b, stride, pad, groups, y, scratch)
        conv.conv2d_weight_grad(x, dy, stride, pad, groups, gw, None, scratch)
        conv.conv2d_input_grad(dy, w, stride, pad, groups, dx, scratch)
        for a, b_ in zip((y, gw, dx), want):
            close(a, b_)
        got[planned] = (y, gw, dx)
        assert blas.blas_threads() == before
    monkeypatch.setattr(conv_threads, "blas_threads", lambda: 1)
    scratch = np.empty(conv_gemm.scratch_size(x_shape, w_shape, stride, pad, groups, workers), np.float32)
    y1 = conv.conv2d_forward(x, w, b, stride, pad, groups, np.empty_like(dy), scratch)
    np.testing.assert_array_equal(got[1][0], y1)        # too little scratch for the threads: one share, as on one
    assert [(s.start, s.stop) for s in conv_threads.shares(5, 3)] == [(0, 2), (2, 4), (4, 5)]


def test_an_error_in_a_share_is_raised_after_every_share_finished(monkeypatch):
    done = []

    def job(k):
        if k == 1:
            raise RuntimeError("share 1 failed")
        done.append(k)
    with pytest.raises(RuntimeError, match="share 1 failed"):
        conv_threads.run([lambda: job(0), lambda: job(1), lambda: job(2)])
    assert sorted(done) == [0, 2]
    import threading
    conv_threads.run([lambda k=k: job(k) for k in (3, 4, 5, 6)])             # more threads: the old ones stop
    assert sorted(done) == [0, 2, 3, 4, 5, 6]
    for _ in range(100):
        if sum(t.name == "edgeff-conv" for t in threading.enumerate()) == 3:
            break
        threading.Event().wait(0.01)
    assert sum(t.name == "edgeff-conv" for t in threading.enumerate()) == 3


def test_a_wait_cut_short_leaves_no_late_reply_for_the_next_call(monkeypatch):
    """Ctrl-C while the caller waits for the other threads: those threads are dropped, so their
    reply cannot be taken for the next call's, which runs on new ones."""
    conv_threads.run([lambda: None, lambda: None])
    threads = conv_threads._threads
    real = threads.done

    class Interrupted:
        def get(self):
            raise KeyboardInterrupt

        def put(self, reply):
            real.put(reply)
    monkeypatch.setattr(threads, "done", Interrupted())
    with pytest.raises(KeyboardInterrupt):
        conv_threads.run([lambda: None, lambda: None])
    assert conv_threads._threads is None
    ran = []
    conv_threads.run([lambda: ran.append(0), lambda: ran.append(1)])
    assert sorted(ran) == [0, 1] and conv_threads._threads is not threads


def test_l2_cache_size_is_read_from_the_cache_entries(tmp_path):
    """The level-2 entry's size (K or M), whichever index holds it; the fallback without entries."""
    for index, level, size in [(0, "1", "32K"), (1, "1", "32K"), (2, "2", "1280K"), (3, "3", "32M")]:
        (tmp_path / f"index{index}").mkdir()
        (tmp_path / f"index{index}" / "level").write_text(level + "\n")
        (tmp_path / f"index{index}" / "size").write_text(size + "\n")
    assert conv_gemm.l2_cache_bytes(str(tmp_path)) == 1280 * 1024
    (tmp_path / "index2" / "size").write_text("2M\n")
    assert conv_gemm.l2_cache_bytes.__wrapped__(str(tmp_path)) == 2 * 2**20
    assert conv_gemm.l2_cache_bytes(str(tmp_path / "none")) == conv_gemm.FALLBACK_L2_BYTES
    assert conv_gemm.l2_sharers(str(tmp_path)) == 1          # no shared_cpu_list: a core's own
    for listed, sharers in [("0-3", 4), ("0,2", 2), ("0-1,4-5", 4), ("junk", 1)]:
        (tmp_path / "index2" / "shared_cpu_list").write_text(listed + "\n")
        assert conv_gemm.l2_sharers.__wrapped__(str(tmp_path)) == sharers


ALLOCATION_PROBE = """
import json, tracemalloc
import numpy as np
from numba.core.runtime import rtsys
from edgeff.kernels import conv

def calls(c_in, c_out, groups, k, stride, pad, n=64, hw=16):
    r = np.random.default_rng(0)
    x, w = r.random((n, c_in, hw, hw), np.float32), r.random((c_out, c_in // groups, k, k), np.float32)
    oh, ow = conv.conv2d_output_size(hw, hw, k, k, stride, pad)
    dy = r.random((n, c_out, oh, ow), np.float32)
    y, b, gw, gb, dx = np.empty_like(dy), r.random(c_out, np.float32), np.empty_like(w), np.empty(c_out, np.float32), np.empty_like(x)
    s = np.empty(conv.conv2d_scratch_size(x.shape, w.shape, stride, pad, groups), np.float32)
    return [lambda: conv.conv2d_forward(x, w, b, stride, pad, groups, y, s),
            lambda: conv.conv2d_weight_grad(x, dy, stride, pad, groups, gw, gb, s),
            lambda: conv.conv2d_input_grad(dy, w, stride, pad, groups, dx, s)]

for case in [(16, 32, 1, 1, 1, 0), (16, 32, 2, 3, 1, 1), (16, 32, 1, 3, 2, 1), (16, 32, 16, 3, 1, 1)]:
    for call in calls(*case):
        call()  # compile
        tracemalloc.start()
        before = rtsys.get_allocation_stats()
        call()
        after = rtsys.get_allocation_stats()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(json.dumps({"case": case, "nrt_unfreed": (after.alloc - before.alloc) - (after.free - before.free),
                          "python_peak": peak}))
"""


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="counts the compiled kernels' allocations")
def test_conv_calls_allocate_no_arrays():
    """The three calls on a batch of 64 (pointwise, grouped, stride 2, depthwise) allocate no array:
    Numba's per-argument wrappers are all freed, and the Python heap never grows by even one
    sample's output or weight gradient (16 KiB here). NUMBA_NRT_STATS must be set before Numba starts."""
    r = subprocess.run([sys.executable, "-c", ALLOCATION_PROBE], env=dict(os.environ, NUMBA_NRT_STATS="1"),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(runs) == 12
    for run in runs:
        assert run["nrt_unfreed"] == 0 and run["python_peak"] < 16 * 1024, run
