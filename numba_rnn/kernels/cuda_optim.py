"""CUDA twins of :mod:`numba_rnn.kernels.cpu_optim`: optimizer updates on the device.

Same names, arguments and update rules as the CPU kernels (``torch.optim``'s), one
thread per element. The host wrappers cast the hyper-parameters to the parameters'
dtype before launch, so float32 parameters are updated in float32 arithmetic as on
the CPU; nothing is copied between host and device.
"""
import math

import numpy as np
from numba import cuda

from .cuda_arrays import over


@cuda.jit
def _sgd(p, g, buf, lr, mu, damp, nesterov, wd, first):
    i = cuda.grid(1)
    if i < p.size:
        d = g[i] + wd * p[i]
        if mu != 0:
            buf[i] = d if first else mu * buf[i] + damp * d
            d = d + mu * buf[i] if nesterov else buf[i]
        p[i] -= lr * d


@cuda.jit
def _adam(p, g, m, v, vmax, b1, b2, one_b1, one_b2, wd, lr, step_size, c2, eps,
          amsgrad, decoupled):
    i = cuda.grid(1)
    if i < p.size:
        d = g[i]
        if decoupled:
            p[i] -= lr * wd * p[i]
        else:
            d = d + wd * p[i]
        m[i] = b1 * m[i] + one_b1 * d
        v[i] = b2 * v[i] + one_b2 * d * d
        vi = v[i]
        if amsgrad:
            if vi > vmax[i]:
                vmax[i] = vi
            vi = vmax[i]
        p[i] -= step_size * m[i] / (math.sqrt(vi) / c2 + eps)


@cuda.jit
def _rmsprop(p, g, sq, buf, a, one_a, lr, eps, wd, mu):
    i = cuda.grid(1)
    if i < p.size:
        d = g[i] + wd * p[i]
        sq[i] = a * sq[i] + one_a * d * d
        step = d / (math.sqrt(sq[i]) + eps)
        if mu != 0:
            buf[i] = mu * buf[i] + step
            step = buf[i]
        p[i] -= lr * step


@cuda.jit
def _adagrad(p, g, acc, lr, eps, wd):
    i = cuda.grid(1)
    if i < p.size:
        d = g[i] + wd * p[i]
        acc[i] += d * d
        p[i] -= lr * d / (math.sqrt(acc[i]) + eps)


def sgd_(p, g, buf, lr, momentum, dampening, nesterov, weight_decay, first):
    """SGD with momentum (and Nesterov): buf = μ·buf + (1−τ)·g; p −= lr·(g + μ·buf | buf)."""
    f = np.dtype(p.dtype).type
    over(_sgd, p.size)(p, g, buf, f(lr), f(momentum), f(1.0 - dampening),
                            bool(nesterov), f(weight_decay), bool(first))


def adam_(p, g, m, v, vmax, lr, beta1, beta2, eps, weight_decay, step, amsgrad, decoupled):
    """Adam / AdamW / AMSGrad, with bias correction for ``step`` ≥ 1."""
    f = np.dtype(p.dtype).type
    c1 = 1.0 - beta1 ** step
    c2 = math.sqrt(1.0 - beta2 ** step)
    over(_adam, p.size)(p, g, m, v, vmax, f(beta1), f(beta2), f(1) - f(beta1),
                             f(1) - f(beta2), f(weight_decay), f(lr), f(lr / c1), f(c2),
                             f(eps), bool(amsgrad), bool(decoupled))


def rmsprop_(p, g, sq, buf, lr, alpha, eps, weight_decay, momentum):
    """RMSprop: sq = α·sq + (1−α)·g²; p −= lr·g/(√sq + ε) (with optional momentum)."""
    f = np.dtype(p.dtype).type
    over(_rmsprop, p.size)(p, g, sq, buf, f(alpha), f(1) - f(alpha), f(lr), f(eps),
                                f(weight_decay), f(momentum))


def adagrad_(p, g, acc, lr, eps, weight_decay):
    """Adagrad: acc += g²; p −= lr·g/(√acc + ε)."""
    f = np.dtype(p.dtype).type
    over(_adagrad, p.size)(p, g, acc, f(lr), f(eps), f(weight_decay))
