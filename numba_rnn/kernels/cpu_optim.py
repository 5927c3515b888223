"""Numba kernels for optimizer updates, in place on flat parameter arrays.

Each takes the parameter ``p``, its gradient ``g`` and the optimizer's state buffers
(all flat, same length and dtype) plus scalar hyper-parameters, and follows the
update rules of ``torch.optim`` (L2 weight decay is added to the gradient; Adam's
``decoupled`` flag gives AdamW). Arithmetic runs in the parameters' dtype.
"""
import math

from numba import njit


@njit(cache=True, nogil=True)
def sgd_(p, g, buf, lr, momentum, dampening, nesterov, weight_decay, first):
    """SGD with momentum (and Nesterov): buf = μ·buf + (1−τ)·g; p −= lr·(g + μ·buf | buf)."""
    f = p.dtype.type
    lr, mu, damp, wd = f(lr), f(momentum), f(1.0 - dampening), f(weight_decay)
    for i in range(p.size):
        d = g[i] + wd * p[i]
        if mu != 0:
            buf[i] = d if first else mu * buf[i] + damp * d
            d = d + mu * buf[i] if nesterov else buf[i]
        p[i] -= lr * d


@njit(cache=True, nogil=True)
def adam_(p, g, m, v, vmax, lr, beta1, beta2, eps, weight_decay, step, amsgrad, decoupled):
    """Adam / AdamW / AMSGrad, with bias correction for ``step`` ≥ 1."""
    f = p.dtype.type
    b1, b2, wd = f(beta1), f(beta2), f(weight_decay)
    c1 = 1.0 - beta1 ** step
    c2 = math.sqrt(1.0 - beta2 ** step)
    step_size = f(lr / c1)
    eps_, lr_ = f(eps), f(lr)
    one = f(1)
    for i in range(p.size):
        d = g[i]
        if decoupled:
            p[i] -= lr_ * wd * p[i]
        else:
            d = d + wd * p[i]
        m[i] = b1 * m[i] + (one - b1) * d
        v[i] = b2 * v[i] + (one - b2) * d * d
        vi = v[i]
        if amsgrad:
            if vi > vmax[i]:
                vmax[i] = vi
            vi = vmax[i]
        p[i] -= step_size * m[i] / (math.sqrt(vi) / f(c2) + eps_)


@njit(cache=True, nogil=True)
def rmsprop_(p, g, sq, buf, lr, alpha, eps, weight_decay, momentum):
    """RMSprop: sq = α·sq + (1−α)·g²; p −= lr·g/(√sq + ε) (with optional momentum)."""
    f = p.dtype.type
    a, lr_, eps_, wd, mu = f(alpha), f(lr), f(eps), f(weight_decay), f(momentum)
    one = f(1)
    for i in range(p.size):
        d = g[i] + wd * p[i]
        sq[i] = a * sq[i] + (one - a) * d * d
        step = d / (math.sqrt(sq[i]) + eps_)
        if mu != 0:
            buf[i] = mu * buf[i] + step
            step = buf[i]
        p[i] -= lr_ * step


@njit(cache=True, nogil=True)
def adagrad_(p, g, acc, lr, eps, weight_decay):
    """Adagrad: acc += g²; p −= lr·g/(√acc + ε)."""
    f = p.dtype.type
    lr_, eps_, wd = f(lr), f(eps), f(weight_decay)
    for i in range(p.size):
        d = g[i] + wd * p[i]
        acc[i] += d * d
        p[i] -= lr_ * d / (math.sqrt(acc[i]) + eps_)
