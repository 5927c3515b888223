"""Shared by the layout tests: one layer-direction run with several row-block and
hidden-unit-panel cuts, serial and parallel, every output compared."""
import contextlib

import numba
import numpy as np

from numba_rnn.kernels import cpu


def run_layer(U, W, a0, dA, lengths, parallel, blocks, panels):
    """Forward + BPTT of one layer-direction: ``(A, delta, dh0, norms)``."""
    A = cpu.recurrence_forward(U, W, a0, 0, False, parallel, lengths, blocks=blocks,
                               panels=panels)
    return (A, *cpu.recurrence_backward(dA, A, W, a0, 0, False, parallel, lengths,
                                        blocks=blocks, panels=panels))


@contextlib.contextmanager
def numba_threads(n):
    """Numba's thread count set to ``n`` (at most what it started with) for a while."""
    before = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def assert_cuts_agree(U, W, a0, dA, lengths=None,
                                   runs=((False, 1, 1), (True, 1, 2), (True, 1, 3)),
                                   rtol=0.0, atol=0.0):
    """Forward + BPTT for each ``(parallel, blocks, panels)`` in ``runs`` (None: the
    default cut); states, δ, dh0 and norms must equal the first run's — bit for bit,
    or within ``rtol``/``atol`` where given. Returns the first run's outputs
    ``(A, delta, dh0, norms)``."""
    outs = [run_layer(U, W, a0, dA, lengths, *run) for run in runs]
    for other in outs[1:]:
        for a, b in zip(outs[0], other, strict=True):
            if rtol or atol:
                np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
            else:
                np.testing.assert_array_equal(a, b)
    return outs[0]


def assert_default_cut_same_bits_any_threads(U, W, a0, dA, lengths=None):
    """The default cut run serially, in parallel and with ``parallel=None``, on 1 and
    on 2 of Numba's threads: every output bit for bit the same. Returns the outputs."""
    outs = []
    for threads in (1, 2):
        with numba_threads(threads):
            outs += [run_layer(U, W, a0, dA, lengths, p, None, None)
                     for p in (False, True, None)]
    for other in outs[1:]:
        for a, b in zip(outs[0], other, strict=True):
            np.testing.assert_array_equal(a, b)
    return outs[0]
