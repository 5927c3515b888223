"""Optimizers updating a params dict in place, with Numba kernels.

``opt = Adam(model.params, lr=1e-3); opt.step(grads)`` — ``grads`` has the keys of
``params``. The update rules are ``torch.optim``'s (checked against it in the tests).
``state_dict()`` returns plain arrays and numbers (saved in checkpoints without
pickle); ``load_state_dict`` restores them.
"""
import numpy as np

from .kernels import backend_of


class Optimizer:
    """Base class: holds the params dict, per-parameter state buffers and a step count."""

    _buffers = ()          # names of the per-parameter state buffers
    _hyper = ()            # names of the hyper-parameters

    def __init__(self, params, **hyper):
        if not isinstance(params, dict) or not params:
            raise TypeError("params must be a non-empty dict of arrays (model.params)")
        backends = {backend_of(p) for p in params.values()}
        be = backends.pop() if len(backends) == 1 else None
        for name, p in params.items():
            if be is None or np.dtype(p.dtype).kind != "f" or be.asarray(p, name, p.dtype) is not p:
                raise TypeError(f"params[{name!r}] must be a C-contiguous float array, all "
                                f"params on one device (NumPy arrays or numba device arrays)")
        self._be = be
        self.params = params
        for k, v in hyper.items():
            v = float(v) if not isinstance(v, bool) else v
            if isinstance(v, float) and (not np.isfinite(v) or v < 0):
                raise ValueError(f"{k} must be a finite number ≥ 0, got {v}")
            setattr(self, k, v)
        self.state = {b: {k: be.zeros(p.shape, p.dtype) for k, p in params.items()}
                      for b in self._buffers}
        self.steps = 0

    def step(self, grads):
        """Apply one update from ``grads`` (same keys and shapes as ``params``)."""
        if set(grads) != set(self.params):
            missing = sorted(set(self.params) - set(grads))
            extra = sorted(set(grads) - set(self.params))
            raise ValueError(f"grads must have the keys of params: missing {missing}, "
                             f"unexpected {extra}")
        self.steps += 1
        for name, p in self.params.items():
            g = grads[name]
            if g.shape != p.shape:
                raise ValueError(f"grads[{name!r}] has shape {g.shape}, params {p.shape}")
            g = self._be.asarray(g, f"grads[{name!r}]", p.dtype)
            bufs = [self.state[b][name].reshape(p.size) for b in self._buffers]
            self._update(p.reshape(p.size), g.reshape(p.size), *bufs)

    def state_dict(self):
        """``{"hyper": {...}, "steps": int, "state": {buffer: {name: array}}}``."""
        return {"class": type(self).__name__, "steps": self.steps,
                "hyper": {k: getattr(self, k) for k in self._hyper},
                "state": {b: {k: np.array(self._be.to_host(v)) for k, v in d.items()}
                          for b, d in self.state.items()}}

    def load_state_dict(self, sd):
        """Restore from :meth:`state_dict` (shapes are checked)."""
        if sd.get("class") != type(self).__name__:
            raise ValueError(f"state dict is for {sd.get('class')}, not {type(self).__name__}")
        for b in self._buffers:
            for k, p in self.params.items():
                arr = np.asarray(sd["state"][b][k])
                if arr.shape != p.shape:
                    raise ValueError(f"state {b}[{k!r}] has shape {arr.shape}, expected {p.shape}")
                self._be.assign_(self.state[b][k], arr)
        for k in self._hyper:
            setattr(self, k, sd["hyper"][k])
        self.steps = int(sd["steps"])


class SGD(Optimizer):
    """SGD with momentum μ, dampening τ, Nesterov, and L2 weight decay."""

    _buffers = ("momentum_buffer",)
    _hyper = ("lr", "momentum", "dampening", "nesterov", "weight_decay")

    def __init__(self, params, lr=0.01, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening = 0")
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         nesterov=bool(nesterov), weight_decay=weight_decay)

    def _update(self, p, g, buf):
        self._be.sgd_(p, g, buf, self.lr, self.momentum, self.dampening, self.nesterov,
                 self.weight_decay, self.steps == 1)


class Adam(Optimizer):
    """Adam (Kingma & Ba), AMSGrad, and AdamW with ``decoupled_weight_decay=True``."""

    _buffers = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _hyper = ("lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad", "decoupled_weight_decay")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, decoupled_weight_decay=False):
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        super().__init__(params, lr=lr, beta1=betas[0], beta2=betas[1], eps=eps,
                         weight_decay=weight_decay, amsgrad=bool(amsgrad),
                         decoupled_weight_decay=bool(decoupled_weight_decay))

    def _update(self, p, g, m, v, vmax):
        self._be.adam_(p, g, m, v, vmax, self.lr, self.beta1, self.beta2, self.eps,
                  self.weight_decay, self.steps, self.amsgrad, self.decoupled_weight_decay)


class RMSprop(Optimizer):
    """RMSprop with smoothing α and optional momentum."""

    _buffers = ("square_avg", "momentum_buffer")
    _hyper = ("lr", "alpha", "eps", "weight_decay", "momentum")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0):
        if not 0 <= alpha < 1:
            raise ValueError(f"alpha must lie in [0, 1), got {alpha}")
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum)

    def _update(self, p, g, sq, buf):
        self._be.rmsprop_(p, g, sq, buf, self.lr, self.alpha, self.eps, self.weight_decay,
                     self.momentum)


class Adagrad(Optimizer):
    """Adagrad: per-entry learning rates from the accumulated squared gradients."""

    _buffers = ("sum",)
    _hyper = ("lr", "eps", "weight_decay")

    def __init__(self, params, lr=1e-2, eps=1e-10, weight_decay=0.0):
        super().__init__(params, lr=lr, eps=eps, weight_decay=weight_decay)

    def _update(self, p, g, acc):
        self._be.adagrad_(p, g, acc, self.lr, self.eps, self.weight_decay)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "rmsprop": RMSprop, "adagrad": Adagrad}


def make_optimizer(name, params, **kwargs):
    """``make_optimizer("adam", model.params, lr=1e-3)``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)}, got {name!r}")
    return OPTIMIZERS[name](params, **kwargs)
