"""Reliability, scale: a 100 000-step sequence trains with truncated BPTT in bounded
memory, and a pass whose activations cannot fit fails at once, before allocating."""
import time
import tracemalloc

import numpy as np
import pytest

import numba_rnn as nr
from numba_rnn.memory import ActivationMemoryError


class LongSine:
    """One stream of T steps: predict sin at the next step from sin now (N = 1)."""

    def __init__(self, T):
        s = np.sin(0.07 * np.arange(T + 1)).astype(np.float32)
        self.x, self.y = s[:-1].reshape(T, 1, 1), s[1:].reshape(T, 1, 1)

    def batch(self, rng, n):
        assert n == 1
        return {"x": self.x, "y": self.y}


def test_T_100000_trains_with_tbptt_in_bounded_memory():
    T, H, k = 100_000, 64, 100
    data = LongSine(T)
    model = nr.ManyToMany(1, H, 1, loss="mse", seed=0)
    nr.fit(model, data, steps=5, batch_size=1, tbptt=k, progress=False)   # compile, warm up
    tracemalloc.start()
    t0 = time.perf_counter()
    hist = nr.fit(model, data, steps=T // k, batch_size=1, tbptt=k, lr=3e-3, clip_norm=1.0,
                  progress=False)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    one_activation = T * H * 4                      # a single (T, 1, H) float32 array
    print(f"T={T}: {len(hist.loss)} updates in {seconds:.1f} s, peak {peak / 1e6:.2f} MB "
          f"(one full activation array: {one_activation / 1e6:.1f} MB)")
    assert len(hist.loss) == T // k and hist.stop_reason is None
    assert peak < one_activation / 4                # full BPTT would need several of these
    assert np.mean(hist.loss[-50:]) < 0.1 * np.mean(hist.loss[:50])    # it learns


def _huge(shape):
    """A huge input that costs no memory itself (a broadcast view)."""
    return np.broadcast_to(np.float32(0.5), shape)


@pytest.mark.parametrize("call", ["forward", "inference", "model", "batch_first"])
def test_activations_that_cannot_fit_fail_before_allocating(call):
    rnn = nr.RNN(3, 256, num_layers=2, bidirectional=True, batch_first=call == "batch_first")
    x = _huge((10**8, 8, 3)) if call != "batch_first" else _huge((8, 10**8, 3))
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ActivationMemoryError, match=r"needs about .* GiB.*nothing was "
                                                    r"allocated.*tbptt"):
        if call == "inference":
            rnn(x)
        elif call == "model":
            m = nr.ManyToMany(3, 256, 2, loss="mse")
            m.loss_and_grad(x, _huge((10**8, 8, 2)))
        else:
            rnn.forward(x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert time.perf_counter() - t0 < 1.0 and peak < 10**6
    assert issubclass(ActivationMemoryError, MemoryError)


def test_small_passes_skip_the_memory_reading(monkeypatch):
    from numba_rnn import memory
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 0)
    memory.check_fits(memory.UNCHECKED_BYTES - 1, "small")           # not even read
    with pytest.raises(ActivationMemoryError):
        memory.check_fits(memory.UNCHECKED_BYTES, "big")
