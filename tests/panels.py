"""Shared by the bitwise tests: one layer-direction run serially and with several row
blocks and hidden-unit panels, every output compared bit for bit."""
import numpy as np

from numba_rnn.kernels import cpu


def assert_same_bits_across_panels(U, W, a0, dA, lengths=None,
                                   runs=((False, 1, 1), (True, 1, 2), (True, 1, 3))):
    """Forward + BPTT for each ``(parallel, blocks, panels)`` in ``runs``; states, δ,
    dh0 and norms must equal the first run's bit for bit. Returns the first run's
    outputs ``(A, delta, dh0, norms)``."""
    outs = []
    for parallel, b, p in runs:
        A = cpu.recurrence_forward(U, W, a0, 0, False, parallel, lengths, blocks=b, panels=p)
        outs.append((A, *cpu.recurrence_backward(dA, A, W, a0, 0, False, parallel, lengths,
                                                 blocks=b, panels=p)))
    for other in outs[1:]:
        for a, b in zip(outs[0], other, strict=True):
            np.testing.assert_array_equal(a, b)
    return outs[0]
