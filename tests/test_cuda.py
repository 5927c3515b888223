"""The CUDA backend against the CPU one: every kernel, the whole RNN, clipping, optimizers.

Without a GPU these run in numba's CUDA simulator (``tests/conftest.py`` switches it
on before numba is imported), at tiny sizes; on a GPU the same tests run on the
hardware. float64 results must match the CPU kernels to 1e-10.
"""
import functools
import os
import subprocess
import sys

import numpy as np
import pytest
from numba import cuda

import numba_rnn as nr
from numba_rnn import clip, optim
from numba_rnn.kernels import CudaUnavailableError, cpu, get_backend

from .conftest import _gpu_present, make_problem, tool

gpu = get_backend("cuda")
TANH, RELU = 0, 1


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def host(a):
    return a.copy_to_host() if gpu.is_array(a) else np.asarray(a)


def assert_close(a, b, tol=1e-10):
    a, b = host(a), host(b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# ---------------------------------------------------------------------- recurrences
# (variant, blocks, lanes per dot, kind, reverse, lengths): every variant with the plan's
# lanes in every direction and padding; then several lanes (block: 2 and 8 lanes a unit,
# 5·8 = 40 threads; grid: 8, and 32 lanes, five reduction levels), each in two of them
DIRECTIONS = [(TANH, False, None), (RELU, True, [4, 2, 1]), (TANH, False, [3, 4, 1]),
              (RELU, False, None), (TANH, True, [4, 2, 1]), (RELU, False, [3, 4, 1])]
CASES = [(v, None, None, *d) for v in ("block", "grid", "step") for d in DIRECTIONS] + \
    [(v, b, p, *d) for v, b, p in (("block", None, 2), ("block", None, 8), ("grid", None, 8),
                                   ("grid", None, 32))
     for d in DIRECTIONS[1:3]]


@pytest.mark.parametrize("variant,blocks,lanes,kind,reverse,lengths", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}-{'relu' if c[3] else 'tanh'}-"
                              f"{'rev' if c[4] else 'fwd'}{'-len' if c[5] else ''}"
                              for c in CASES])
def test_recurrence_kernels_match_cpu(variant, blocks, lanes, kind, reverse, lengths):
    rng = np.random.default_rng(1)
    T, N, H = 4, 3, 5
    U, dA = rng.standard_normal((2, T, N, H))
    W = 0.6 * rng.standard_normal((H, H))
    a0, dh_n = rng.standard_normal((2, N, H))
    lens = None if lengths is None else np.array(lengths)
    A = cpu.recurrence_forward(U, W, a0, kind, reverse, lengths=lens)
    A_gpu = gpu.recurrence_forward(dev(U), dev(W), dev(a0), kind, reverse, lengths=lens,
                                   variant=variant, blocks=blocks, threads=64, lanes=lanes)
    assert_close(A_gpu, A)
    delta, dh0, norms = cpu.recurrence_backward(dA, A, W, dh_n, kind, reverse, lengths=lens)
    d_gpu, dh0_gpu, n_gpu = gpu.recurrence_backward(dev(dA), dev(A), dev(W), dev(dh_n), kind,
                                                    reverse, lengths=lens, variant=variant,
                                                    blocks=blocks, threads=64, lanes=lanes)
    assert_close(d_gpu, delta)
    assert_close(dh0_gpu, dh0)
    assert_close(n_gpu, norms)


def test_block_variant_beyond_its_threads_raises_or_falls_back():
    """H·S threads over the cap: a forced 'block' says so; the automatic choice runs
    another variant and still matches the CPU."""
    rng = np.random.default_rng(5)
    U, W, a0 = rng.standard_normal((3, 2, 5)), 0.5 * rng.standard_normal((5, 5)), \
        rng.standard_normal((2, 5))
    dA, dh_n = rng.standard_normal((3, 2, 5)), rng.standard_normal((2, 5))
    with pytest.raises(ValueError, match="variant='block' needs 5·8 threads"):
        gpu.recurrence_forward(dev(U), dev(W), dev(a0), TANH, variant="block", lanes=8,
                               threads=32)
    with pytest.raises(ValueError, match="variant='block' needs"):
        gpu.recurrence_backward(dev(dA), dev(U), dev(W), None, TANH, variant="block",
                                lanes=8, threads=32)
    A = cpu.recurrence_forward(U, W, a0, TANH)
    assert_close(gpu.recurrence_forward(dev(U), dev(W), dev(a0), TANH, lanes=8, threads=32), A)
    want = cpu.recurrence_backward(dA, A, W, dh_n, TANH)
    got = gpu.recurrence_backward(dev(dA), dev(A), dev(W), dev(dh_n), TANH, lanes=8, threads=32)
    for g, w in zip(got, want, strict=True):
        assert_close(g, w)


def test_row_views_lengths_and_zeros_helpers():
    """The host-path helpers: row views equal slicing (built directly where the array is
    C-contiguous, by numba's slicing where not), the full-length lengths are made once
    per (T, N), zeros are zeros."""
    a = np.arange(24.0).reshape(4, 3, 2)
    d = dev(a)
    assert_close(gpu.row_view(d, 2), a[2])
    assert_close(gpu.rows_view(d, 1, 3), a[1:3])
    assert_close(gpu.rows_view(d, 0, 4).reshape(12, 2), a.reshape(12, 2))
    t = dev(np.ascontiguousarray(a.transpose(1, 0, 2)))[:, 1:]          # not C-contiguous
    assert_close(gpu.row_view(t, 1), a.transpose(1, 0, 2)[1, 1:])
    assert_close(gpu.rows_view(t, 0, 2), a.transpose(1, 0, 2)[0:2, 1:])
    full = gpu.lengths_array(None, 7, 3)
    assert gpu.lengths_array(None, 7, 3) is full and host(full).tolist() == [7, 7, 7]
    assert host(gpu.zeros((2, 3), np.float32)).tolist() == [[0.0] * 3] * 2


def test_forward_overwrites_U_in_place_when_asked():
    rng = np.random.default_rng(2)
    U, W, a0 = rng.standard_normal((3, 5, 4)), rng.standard_normal((4, 4)), np.zeros((5, 4))
    U_dev = dev(U)
    A = gpu.recurrence_forward(U_dev, dev(W), dev(a0), TANH, overwrite_U=True)
    assert A is U_dev
    assert_close(A, cpu.recurrence_forward(U, W, a0, TANH))


# (N, H, T): the bench shapes' batch and width, a few steps; tiny, stream, medium, large,
# db-1760, db-2560
GPU_SHAPES = [(16, 64, 9), (1, 256, 9), (64, 256, 5), (64, 1024, 3), (16, 1760, 3),
              (64, 2560, 2)]


@pytest.mark.skipif(gpu.SIMULATOR, reason="hardware shapes: many blocks, lanes and threads")
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 2e-4)],
                         ids=["f64", "f32"])
@pytest.mark.parametrize("N,H,T", GPU_SHAPES, ids=[f"{n}x{h}" for n, h, _ in GPU_SHAPES])
def test_recurrences_at_bench_shapes_on_the_gpu(N, H, T, dtype, tol):
    """Every variant the plan would pick on this GPU (and step) at the bench shapes,
    against the CPU kernels: the tests above run them at toy sizes only."""
    rng = np.random.default_rng(7)
    U, dA = (rng.standard_normal((T, N, H)).astype(dtype) for _ in range(2))
    W = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
    a0, dh_n = (rng.standard_normal((N, H)).astype(dtype) for _ in range(2))
    lens = np.array([T - n % 2 for n in range(N)])
    A = cpu.recurrence_forward(U, W, a0, TANH, lengths=lens)
    want = cpu.recurrence_backward(dA, A, W, dh_n, TANH, lengths=lens)
    for variant in {gpu.plan(N, H, dtype)[0], "step"}:
        A_gpu = gpu.recurrence_forward(dev(U), dev(W), dev(a0), TANH, lengths=lens,
                                       variant=variant)
        assert_close(A_gpu, A, tol)
        got = gpu.recurrence_backward(dev(dA), dev(A), dev(W), dev(dh_n), TANH, lengths=lens,
                                      variant=variant)
        for g, w in zip(got, want, strict=True):
            assert_close(g, w, tol)


def test_grid_variant_needs_co_resident_blocks():
    """Two unit-blocks: a real GPU runs them cooperatively; the simulator only runs
    cooperative grids of one block, so forcing 'grid' must fail clearly there, and the
    automatic choice must fall back to a correct path."""
    rng = np.random.default_rng(3)
    U, W, a0 = rng.standard_normal((3, 2, 6)), 0.5 * rng.standard_normal((6, 6)), \
        rng.standard_normal((2, 6))
    expect = cpu.recurrence_forward(U, W, a0, TANH)
    if gpu.SIMULATOR:
        with pytest.raises(ValueError, match="co-resident"):
            gpu.recurrence_forward(dev(U), dev(W), dev(a0), TANH, variant="grid", blocks=2)
    else:
        assert_close(gpu.recurrence_forward(dev(U), dev(W), dev(a0), TANH, variant="grid",
                                            blocks=2), expect)


def test_plan_picks_the_variant_by_shape():
    f32 = np.float32
    assert gpu.plan(16, 64, f32) == ("block", 4)             # tiny: 16 weights a thread
    assert gpu.plan(16, 128, f32) == ("block", 8)            # 1024 threads
    assert gpu.plan(16, 129, f32)[0] == "grid"               # 16 lanes: too many threads
    assert gpu.plan(64, 1024, f32)[0] == "grid"              # large: split the units
    assert gpu.plan(64, 2560, f32)[0] == "grid"
    assert gpu.plan(64, 20000, f32)[0] == "step"             # one column does not fit
    with pytest.raises(ValueError, match="cannot hold"):
        gpu.plan(64, 1024, f32, variant="block")
    with pytest.raises(ValueError, match="variant must be one of"):
        gpu.plan(4, 4, f32, variant="warp")


def test_plan_and_lanes_on_an_h200(monkeypatch):
    """The sizes chosen for the bench shapes on 132 SMs (what ran on the H200), and the
    lane rule: a power of two ≤ 32, ≥ 4 products a lane, within threads and shared memory."""
    monkeypatch.setattr(gpu, "_device_info", lambda: 132)
    f32 = np.float32
    assert [gpu.plan(N, H, f32) for N, H in [(16, 64), (1, 256), (64, 256), (64, 1024),
                                              (16, 1760), (64, 2560)]] == \
        [("block", 4), ("grid", 4), ("grid", 4), ("grid", 8), ("grid", 4), ("grid", 4)]
    room = 46 * 1024 // 4
    assert gpu._lanes(64, 64, 64, 1024, room) == (16, 1024)       # 64 dots of 64
    assert gpu._lanes(1, 4, 256, 1024, room) == (32, 32)          # stream: one group
    assert gpu._lanes(64, 256, 256, 1024, room) == (16, 1024)     # medium
    assert gpu._lanes(64, 256, 256, 1024, 1024) == (4, 256)       # shared memory binds
    assert gpu._lanes(100, 100, 12, 1024, room) == (2, 224)       # H = 12: 6 a lane
    assert gpu._lanes(100, 100, 7, 1024, room) == (1, 128)        # H = 7: one lane
    assert gpu._lanes(3, 3, 5, 32, room, lanes=32) == (32, 32)
    for bad in (3, 0, 64):
        with pytest.raises(ValueError, match="lanes must be a power of two"):
            gpu._lanes(3, 3, 5, 32, room, lanes=bad)
    with pytest.raises(ValueError, match="lanes must be"):
        gpu._lanes(64, 64, 64, 1024, 100, lanes=4)                # 256 partials > 100
    assert gpu._grid_smem(64, 1024, 7) == 8 * 1024 + 64 * 7 + 64 * 8
    # block: the least lanes leaving ≤ 16 weights a thread, in ≤ 1024 threads
    assert [gpu._block_lanes(H, 1024) for H in (5, 16, 17, 64, 100, 128, 129)] == \
        [1, 1, 2, 4, 8, 8, 0]
    assert [gpu._block_kw(H, S) for H, S in ((5, 1), (17, 2), (64, 4), (100, 8), (3, 2))] == \
        [8, 16, 16, 16, 4]
    assert gpu._block_lanes(64, 1024, lanes=2) == 2     # 32 weights a thread: allowed
    with pytest.raises(ValueError, match="lanes must be a power of two"):
        gpu._block_lanes(64, 1024, lanes=1)             # 64 weights a thread: too many


# ---------------------------------------------------------------------- products
@pytest.mark.parametrize("reverse", [False, True])
def test_products_match_cpu(reverse):
    rng = np.random.default_rng(4)
    T, N, D, H = 4, 3, 5, 6
    x, delta, A = (rng.standard_normal((T, N, k)) for k in (D, H, H))
    W_ax, b, a0 = rng.standard_normal((H, D)), rng.standard_normal(H), rng.standard_normal((N, H))
    assert_close(gpu.input_projection(dev(x), dev(W_ax), dev(b)),
                 cpu.input_projection(x, W_ax, b))
    assert_close(gpu.input_grad(dev(delta), dev(W_ax)), cpu.input_grad(delta, W_ax))
    for got, want in zip(gpu.weight_grads(dev(delta), dev(x), dev(A), dev(a0), reverse),
                         cpu.weight_grads(delta, x, A, a0, reverse), strict=True):
        assert_close(got, want)
    for got, want in zip(gpu.layer_grads(dev(delta), dev(x), dev(A), dev(a0), dev(W_ax), reverse),
                         cpu.layer_grads(delta, x, A, a0, W_ax, reverse), strict=True):
        assert_close(got, want)


def test_gemm_transposes_bias_and_accumulate():
    rng = np.random.default_rng(5)
    a, b, c = rng.standard_normal((19, 7)), rng.standard_normal((7, 11)), rng.standard_normal(11)
    assert_close(gpu.gemm(dev(a), dev(b), bias=dev(c)), a @ b + c)
    assert_close(gpu.gemm(dev(a.T.copy()), dev(b.T.copy()), trans_a=True, trans_b=True), a @ b)
    out = dev(np.ones((19, 11)))
    gpu.gemm(dev(a), dev(b), out=out, accumulate=True)
    assert_close(out, a @ b + 1)


# ---------------------------------------------------------------------- the RNN
MODELS = [(False, 1, "tanh", False), (True, 2, "relu", True), (False, 2, "tanh", True),
          (True, 1, "tanh", False)]


def _twins(bidirectional, num_layers, nonlinearity, batch_first, dtype=np.float64,
           sizes=None, **kw):
    rnn, x, h0, d_out, d_hn = make_problem(bidirectional, num_layers, nonlinearity,
                                           batch_first, dtype=dtype, **(sizes or {}), **kw)
    g = nr.RNN(rnn.input_size, rnn.hidden_size, num_layers=num_layers,
               nonlinearity=nonlinearity, batch_first=batch_first,
               bidirectional=bidirectional, dtype=dtype, device="cuda", **kw)
    g.load_torch_state_dict(rnn.torch_state_dict())
    return rnn, g, x, h0, d_out, d_hn


@pytest.mark.parametrize("bi,L,nl,bf", MODELS,
                         ids=[f"{'bi' if b else 'uni'}-L{L}-{n}{'-bf' if f else ''}"
                              for b, L, n, f in MODELS])
def test_rnn_on_cuda_matches_cpu(bi, L, nl, bf):
    rnn, g, x, h0, d_out, d_hn = _twins(bi, L, nl, bf)
    out, h_n, cache = rnn.forward(x, h0)
    grads, dx, dh0 = rnn.backward(cache, d_out, d_hn)
    out_g, h_n_g, cache_g = g.forward(x, h0)
    grads_g, dx_g, dh0_g = g.backward(cache_g, d_out, d_hn)
    assert isinstance(out_g, np.ndarray) and isinstance(dx_g, np.ndarray)   # host in, host out
    for got, want in [(out_g, out), (h_n_g, h_n), (dx_g, dx), (dh0_g, dh0)]:
        assert_close(got, want)
    assert set(grads_g) == set(grads)
    for k in grads:
        assert gpu.is_array(grads_g[k]) and gpu.is_array(g.params[k])      # params stay there
        assert_close(grads_g[k], grads[k])
    for k in cache.hidden_grad_norms:
        assert_close(cache_g.hidden_grad_norms[k], cache.hidden_grad_norms[k])
    inference = g(x, h0)
    assert_close(inference[0], out)


def test_device_inputs_give_device_results_with_lengths_dropout_and_unbatched():
    rnn, g, x, h0, d_out, d_hn = _twins(True, 2, "tanh", False, dropout=0.5, seed=7)
    lengths = np.array([5, 2, 4])
    out, h_n, cache = rnn.forward(x, h0, lengths=lengths)              # same seed: same masks
    grads, dx, dh0 = rnn.backward(cache, d_out, d_hn)
    out_g, h_n_g, cache_g = g.forward(dev(x), dev(h0), lengths=lengths)
    assert gpu.is_array(out_g) and gpu.is_array(h_n_g)
    grads_g, dx_g, dh0_g = g.backward(cache_g, dev(d_out), dev(d_hn))
    assert gpu.is_array(dx_g) and gpu.is_array(dh0_g)
    for got, want in [(out_g, out), (h_n_g, h_n), (dx_g, dx), (dh0_g, dh0)]:
        assert_close(got, want)
    for k in grads:
        assert_close(grads_g[k], grads[k])
    out1, h1 = rnn(x[:, 0], h0[:, 0])                                    # unbatched (T, D)
    out1_g, h1_g = g(dev(x[:, 0]), dev(h0[:, 0]))
    assert out1_g.shape == out1.shape and h1_g.shape == h1.shape
    assert_close(out1_g, out1)
    assert_close(h1_g, h1)


def test_float32_on_cuda_is_close_to_cpu():
    rnn, g, x, h0, d_out, d_hn = _twins(True, 1, "tanh", True, dtype=np.float32,
                                        sizes=dict(T=6, H=7))
    out, _, cache = rnn.forward(x, h0)
    grads, dx, _ = rnn.backward(cache, d_out, d_hn)
    out_g, _, cache_g = g.forward(x, h0)
    grads_g, dx_g, _ = g.backward(cache_g, d_out, d_hn)
    assert out_g.dtype == np.float32 and host(grads_g["W_aa_l0"]).dtype == np.float32
    assert_close(out_g, out, 2e-5)
    assert_close(dx_g, dx, 2e-5)
    for k in grads:
        assert_close(grads_g[k], grads[k], 1e-4)


def test_float32_device_input_is_cast_and_strided_input_copied():
    rnn, g, x, h0, _, _ = _twins(False, 1, "tanh", False)               # float64 model
    x32 = dev(x.astype(np.float32))
    assert_close(g(x32)[0], rnn(x.astype(np.float32))[0])
    wide = dev(np.concatenate([x, x], axis=2))                          # a strided view
    assert_close(g(wide[:, :, :x.shape[2]])[0], rnn(x)[0])


def test_save_load_and_state_dicts_across_devices(tmp_path):
    rnn, g, x, *_ = _twins(True, 2, "relu", False)
    g.save(tmp_path / "g.npz")
    back = nr.RNN.load(tmp_path / "g.npz", device="cpu")
    for k in rnn.params:
        np.testing.assert_array_equal(back.params[k], rnn.params[k])
    rnn.save(tmp_path / "c.npz")
    on_gpu = nr.RNN.load(tmp_path / "c.npz", device="cuda")
    assert on_gpu.device == "cuda"
    assert_close(on_gpu(x)[0], rnn(x)[0])
    sd = g.torch_state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())


# ---------------------------------------------------------------------- clipping
@functools.lru_cache(maxsize=1)
def _gradients():
    """Host gradients of one backward on each device (computed once per session)."""
    rnn, g, x, h0, d_out, d_hn = _twins(False, 1, "tanh", False)
    grads, _, _ = rnn.backward(rnn.forward(x, h0)[2], d_out, d_hn)
    grads_g, _, _ = g.backward(g.forward(x, h0)[2], d_out, d_hn)
    for k in grads:
        assert_close(grads_g[k], grads[k])
    return grads, {k: host(v) for k, v in grads_g.items()}


def _grads_pair():
    """Fresh copies: CPU gradients, and the GPU's on the device."""
    grads, grads_g = _gradients()
    return {k: v.copy() for k, v in grads.items()}, {k: dev(v) for k, v in grads_g.items()}


@pytest.mark.parametrize("p", [2.0, 1.0, np.inf, 3.0])
def test_clip_grad_norm_on_device_matches_cpu(p):
    grads, grads_g = _grads_pair()
    norm = clip.clip_grad_norm(grads, 0.1, norm_type=p)
    norm_g = clip.clip_grad_norm(grads_g, 0.1, norm_type=p)
    assert norm_g == pytest.approx(norm, rel=1e-12)
    assert clip.total_norm(grads_g, p) == pytest.approx(clip.total_norm(grads, p), rel=1e-12)
    for k in grads:
        assert_close(grads_g[k], grads[k])


def test_clip_value_and_nonfinite_on_device():
    grads, grads_g = _grads_pair()
    assert clip.clip_grad_value(grads_g, 0.05) == clip.clip_grad_value(grads, 0.05) > 0
    for k in grads:
        assert_close(grads_g[k], grads[k])
    bad = np.array(host(grads_g["W_aa_l0"]))
    bad[0, 0] = np.nan
    grads_g["W_aa_l0"] = dev(bad)
    before = {k: host(v).copy() for k, v in grads_g.items()}
    with pytest.warns(RuntimeWarning, match="NaN or inf"):
        assert np.isnan(clip.clip_grad_norm(grads_g, 1e-3))
    for k in grads_g:                                       # left unscaled, not NaN-spread
        np.testing.assert_array_equal(host(grads_g[k]), before[k])
    with pytest.raises(clip.NonFiniteGradientError):
        clip.clip_grad_norm(grads_g, 1e-3, error_if_nonfinite=True)
    with pytest.raises(TypeError, match="mixes host"):
        clip.clip_grad_norm({"a": np.ones(3), "b": dev(np.ones(3))}, 1.0)


# ---------------------------------------------------------------------- optimizers
@pytest.mark.parametrize("name,kw", [
    ("sgd", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("adam", dict(lr=0.01, decoupled_weight_decay=True, weight_decay=0.1)),
    ("rmsprop", dict(lr=0.01, momentum=0.5)),
    ("adagrad", dict(lr=0.1, weight_decay=0.01)),
])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_optimizers_on_device_match_cpu(name, kw, dtype):
    rng = np.random.default_rng(6)
    params = {"w": rng.standard_normal((4, 3)).astype(dtype),
              "b": rng.standard_normal(3).astype(dtype)}
    params_g = {k: dev(v) for k, v in params.items()}
    opt = optim.make_optimizer(name, params, **kw)
    opt_g = optim.make_optimizer(name, params_g, **kw)
    for _ in range(3):
        grads = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()}
        opt.step(grads)
        opt_g.step({k: dev(v) for k, v in grads.items()})
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for k in params:
        assert gpu.is_array(params_g[k])
        assert_close(params_g[k], params[k], tol)
    sd = opt_g.state_dict()
    assert all(isinstance(v, np.ndarray) for d in sd["state"].values() for v in d.values())
    fresh = optim.make_optimizer(name, {k: dev(v) for k, v in params.items()}, **kw)
    fresh.load_state_dict(sd)
    for b in fresh.state:
        for k in params:
            assert_close(fresh.state[b][k], opt.state[b][k], tol)


# ---------------------------------------------------------------------- errors
def test_bad_inputs_are_clear_errors_on_cuda():
    g = nr.RNN(3, 4, device="cuda", dtype=np.float64)
    with pytest.raises(TypeError, match="x must hold floating-point"):
        g(dev(np.ones((2, 1, 3), dtype=np.int64)))
    with pytest.raises(ValueError, match="input_size=3"):
        g(dev(np.ones((2, 1, 5))))
    with pytest.raises(TypeError, match="GPU array"):
        nr.RNN(3, 4)(dev(np.ones((2, 1, 3))))
    g.params["W_aa_l0"] = np.zeros((4, 4))
    with pytest.raises(TypeError, match="device array"):
        g(np.ones((2, 1, 3)))


@pytest.mark.skipif(_gpu_present(), reason="a GPU is present: device='cuda' works here")
def test_no_gpu_gives_a_clear_error():
    code = ("import numba_rnn as nr\n"
            "try:\n    nr.RNN(2, 3, device='cuda')\n"
            "except RuntimeError as e:\n    print(type(e).__name__, '|', e)\n")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.startswith("CudaUnavailableError |"), out.stdout + out.stderr
    assert "device='cpu'" in out.stdout
    assert issubclass(CudaUnavailableError, RuntimeError)


def test_bench_rows_run_end_to_end(monkeypatch):
    """The GPU bench's plumbing (ours, the recurrence kernels alone, rows, table) at a toy
    shape; in the simulator its refusal to time is lifted, as the numbers mean nothing."""
    from numba_rnn import bench_cuda
    monkeypatch.setitem(bench_cuda.SHAPES, "toy", (2, 3, 4, 3))
    monkeypatch.setitem(bench_cuda.TARGETS, "toy", 1.0)
    monkeypatch.setattr(bench_cuda, "_gpu", lambda: gpu)
    rows = bench_cuda.run(("toy",), repeats=1, progress=False)
    assert [r["op"] for r in rows] == ["forward", "train"]
    for r in rows:
        assert r["variant"] == "block" and r["ours_ms"] > 0 and r["kernel_us_per_step"] > 0
    assert f"| toy | train | block ({rows[1]['blocks']}) |" in bench_cuda.table(rows)


def test_gpu_variants_tool_times_every_variant_that_holds_the_shape(monkeypatch):
    """tools/gpu_variants.py (run by tools/gpu_check.sh on a GPU) at a toy shape."""
    monkeypatch.delenv("NO_STEP", raising=False)          # gpu_check.sh may set it
    variants = tool("gpu_variants")
    timings = variants.variants(2, 8, 3, lanes=(2,))
    assert set(timings) == {"block", "grid", "step", "block/2"}
    for fwd_bwd in timings.values():
        assert isinstance(fwd_bwd, tuple) and min(fwd_bwd) > 0, fwd_bwd


@pytest.mark.filterwarnings("ignore:Simulator timings are bogus")
def test_gpu_host_costs_tool_times_every_operation():
    """tools/gpu_host_costs.py at a toy shape: every operation and the block step timed."""
    host = tool("gpu_host_costs")
    costs = host.host_costs(N=2, D=3, H=4, T=3, calls=1)
    assert "rnn(x)" in costs and "forward + backward" in costs and len(costs) == 13
    for enqueue, drained in costs.values():
        assert 0 < enqueue <= drained
    steps = host.block_step_us(N=2, H=4, lanes=(2,), T=(2, 3), repeats=1)
    assert set(steps) == {2} and len(steps[2]) == 2


def test_against_cudnn_when_a_gpu_and_torch_are_present():
    torch = pytest.importorskip("torch")
    if gpu.SIMULATOR or not torch.cuda.is_available():
        pytest.skip("needs a real GPU and torch with CUDA")
    ref = torch.nn.RNN(4, 6, num_layers=2, bidirectional=True, dtype=torch.float64).cuda()
    g = nr.RNN(4, 6, num_layers=2, bidirectional=True, dtype=np.float64, device="cuda")
    g.load_torch_state_dict(ref.state_dict())
    x = torch.randn(5, 3, 4, dtype=torch.float64, device="cuda", requires_grad=True)
    out, h_n = ref(x)
    out_g, h_n_g = g(x.detach())                             # a torch tensor, no copy
    assert gpu.is_array(out_g)
    np.testing.assert_allclose(host(out_g), out.detach().cpu().numpy(), atol=1e-10)
    np.testing.assert_allclose(host(h_n_g), h_n.detach().cpu().numpy(), atol=1e-10)


def test_every_kernel_compiles_for_the_gpu_and_float32_stays_float32():
    """The simulator does no type inference; NVVM does. Where NVVM is installed (a GPU
    machine, or ``pip install numba-cuda[cu12]``) compile every kernel to sm_90 PTX."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    script = os.path.join(os.path.dirname(__file__), "ptx_check.py")
    out = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True,
                         timeout=600)
    text = out.stdout + out.stderr
    if "FAILURES" not in text and ("NVVM" in text or "nvvm" in text):
        pytest.skip("NVVM (the CUDA compiler library) is not installed here")
    assert "FAILURES 0" in text, text[-4000:]


def test_saturation_and_nonfinite_reporting_on_cuda():
    g = nr.RNN(1, 3, device="cuda", dtype=np.float64, seed=0)
    W = host(g.params["W_ax_l0"])
    W[:] = 1.0
    g.params["W_ax_l0"] = dev(W)
    x = np.array([25.0, -25.0, 1e30, -1e4]).reshape(4, 1, 1)
    out, _, cache = g.forward(x)
    np.testing.assert_array_equal(np.abs(out), np.ones_like(out))       # exactly ±1
    grads, _, _ = g.backward(cache, np.ones_like(out), keep_deltas=True)
    np.testing.assert_array_equal(host(cache.deltas["l0"]), 0.0)         # 1 - 1² = 0
    assert all(np.isfinite(host(v)).all() for v in grads.values())
    x[2] = np.nan
    out, _, cache = g.forward(x)
    assert np.isnan(out[2:]).all()
    with pytest.warns(nr.NonFiniteGradientWarning, match="non-finite gradients"):
        g.backward(cache, np.ones_like(out))


# ---------------------------------------------------------------------- models and fit
MODEL_CASES = [("ManyToMany", "cross_entropy", dict(head_hidden=(3,))),
               ("ManyToMany", "mse", dict(bidirectional=True)),
               ("ManyToMany", "bce", dict(num_layers=2, nonlinearity="relu")),
               ("ManyToOne", "cross_entropy", dict(bidirectional=True)),
               ("OneToOne", "mse", dict(head_hidden=(4,)))]


def _model_twins(arch, loss, kw):
    make = getattr(nr, arch)
    return (make(3, 4, 3, loss=loss, dtype=np.float64, seed=5, **kw),
            make(3, 4, 3, loss=loss, dtype=np.float64, seed=5, device="cuda", **kw))


def _model_batch(arch, loss, rng, T=4, N=3):
    x = rng.standard_normal((N, 3) if arch == "OneToOne" else (T, N, 3))
    steps = (T, N) if arch == "ManyToMany" else (N,)
    y = rng.integers(0, 3, steps) if loss == "cross_entropy" else \
        rng.uniform(0, 1, (*steps, 3))
    return x, y


@pytest.mark.parametrize("arch,loss,kw", MODEL_CASES, ids=[f"{a}-{b}" for a, b, _ in MODEL_CASES])
def test_models_on_cuda_match_cpu(arch, loss, kw):
    cpu_model, gpu_model = _model_twins(arch, loss, kw)
    x, y = _model_batch(arch, loss, np.random.default_rng(1))
    extra = {"lengths": np.array([4, 2, 3])} if arch == "ManyToOne" else {}
    L, grads = cpu_model.loss_and_grad(x, y, **extra)
    L_g, grads_g = gpu_model.loss_and_grad(x, y, **extra)
    assert L_g == pytest.approx(L, rel=1e-12)
    assert set(grads_g) == set(grads)
    for k in grads:
        assert gpu.is_array(grads_g[k])
        assert_close(grads_g[k], grads[k])
    pred = cpu_model.forward(x, **extra)
    pred_g = gpu_model.forward(x, **extra)
    assert_close(pred_g[0] if isinstance(pred_g, tuple) else pred_g,
                 pred[0] if isinstance(pred, tuple) else pred)


def test_fit_on_cuda_matches_cpu_and_resumes(tmp_path):
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((5, 12, 3)), rng.integers(0, 3, (5, 12))

    def data():                          # ArrayData keeps its epoch order: one per run
        return nr.ArrayData(x=x, y=y)
    models = _model_twins("ManyToMany", "cross_entropy", {})
    hists = [nr.fit(m, data(), steps=2, batch_size=4, clip_norm=0.5, progress=False,
                    checkpoint=tmp_path / f"{i}.npz") for i, m in enumerate(models)]
    assert hists[1].loss == pytest.approx(hists[0].loss, rel=1e-10)
    for k, v in models[0].params.items():
        assert gpu.is_array(models[1].params[k])
        assert_close(models[1].params[k], v)
    again = _model_twins("ManyToMany", "cross_entropy", {})[1]      # resume on the GPU
    nr.fit(again, data(), steps=3, batch_size=4, clip_norm=0.5, progress=False,
           checkpoint=tmp_path / "1.npz", resume=True)
    nr.fit(models[0], data(), steps=3, batch_size=4, clip_norm=0.5, progress=False,
           checkpoint=tmp_path / "0.npz", resume=True)
    for k, v in models[0].params.items():
        assert_close(again.params[k], v)


def test_analysis_accepts_a_gpu_model_and_device_arrays():
    rnn, g, x, h0, d_out, _ = _twins(True, 1, "tanh", False)
    A = nr.analysis
    for fn, args in [(A.hidden_grad_norms, (x, d_out)), (A.temporal_credit, (x, d_out)),
                     (A.jacobian_norms, (x,)), (A.lyapunov_exponents, (x,))]:
        want = fn(rnn, *args)
        got = fn(g, *(dev(a) for a in args))
        if isinstance(want, dict):
            for k in want:
                np.testing.assert_allclose(got[k], want[k], rtol=1e-10)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-10)
    spec, spec_g = A.weight_spectrum(rnn), A.weight_spectrum(g)
    for k in spec:
        np.testing.assert_allclose(spec_g[k], spec[k])


@pytest.mark.parametrize("loss,mode", [("cross_entropy", "argmax"), ("cross_entropy", "sample"),
                                       ("mse", "value")])
def test_generate_on_cuda_matches_cpu(loss, mode):
    make = nr.OneToMany
    m = make(4, 6, loss=loss, dtype=np.float64, seed=3)
    g = make(4, 6, loss=loss, dtype=np.float64, seed=3, device="cuda")
    start = np.array([0, 2, 3]) if loss == "cross_entropy" else \
        np.random.default_rng(0).standard_normal((3, 4))
    want = m.generate(start, 5, mode=mode, temperature=0.7, rng=11)
    got = g.generate(start, 5, mode=mode, temperature=0.7, rng=11)
    assert isinstance(got, np.ndarray) and got.shape == want.shape
    if mode == "value":
        assert_close(got, want)
    else:
        np.testing.assert_array_equal(got, want)
    on_dev = g.generate(dev(start), 3, mode=mode, temperature=0.7, rng=11)   # device in, out
    assert gpu.is_array(on_dev)


@pytest.mark.parametrize("kw", [dict(bidirectional=True), dict(dec_hidden=5, num_layers=2)],
                         ids=["direct-bridge", "projected-bridge"])
def test_seq2seq_on_cuda_matches_cpu(kw):
    m = nr.Seq2Seq(3, 5, 4, dtype=np.float64, seed=2, **kw)
    g = nr.Seq2Seq(3, 5, 4, dtype=np.float64, seed=2, device="cuda", **kw)
    rng = np.random.default_rng(0)
    src, tgt = rng.standard_normal((4, 2, 3)), rng.integers(0, 5, (3, 2))
    L, grads = m.loss_and_grad(src, tgt, tgt_lengths=np.array([3, 2]))
    L_g, grads_g = g.loss_and_grad(src, tgt, tgt_lengths=np.array([3, 2]))
    assert L_g == pytest.approx(L, rel=1e-12)
    for k in grads:
        assert_close(grads_g[k], grads[k])
    for mode in ("greedy", "sample"):
        want = m.decode(src, 4, mode=mode, eos=1, rng=5)
        np.testing.assert_array_equal(g.decode(src, 4, mode=mode, eos=1, rng=5), want)



def test_task_models_train_on_cuda_and_load_anywhere(tmp_path):
    task = nr.tasks.make_task("adding", seq_len=4, seed=0)
    model = task.make_model(4, device="cuda", seed=0, **task.model_defaults)
    hist = nr.fit(model, task, steps=2, batch_size=4, progress=False)
    assert len(hist.loss) == 2 and gpu.is_array(model.params["rnn.W_aa_l0"])
    model.save(tmp_path / "m.npz")
    back = nr.load_model(tmp_path / "m.npz", device="cpu")    # saved on the GPU, read on CPU
    assert all(isinstance(v, np.ndarray) for v in back.params.values())
    for k, v in model.params.items():
        np.testing.assert_array_equal(back.params[k], host(v))
