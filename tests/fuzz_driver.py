"""Property-based fuzzing of the public API (hypothesis), run as its own process.

Every case either matches a plain NumPy reference or raises ``ValueError``/``TypeError``
with a message naming the offending argument; anything else — another exception, a
wrong number, a missing error — is a failure. Cases run in this separate process so
that a crash (a segfault in a kernel) is seen by the caller as a failure with the last
case written to ``--log``, not lost with the test session.

    python tests/fuzz_driver.py --examples 200 [--device cuda] [--log fuzz.log]

prints one JSON line: cases and failures per target. ``tests/test_reliability_fuzz.py``
runs it with a bounded budget; set ``NUMBA_RNN_FUZZ_EXAMPLES`` for a longer run.
"""
import argparse
import json
import math
import os
import sys
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numba_rnn as nr  # noqa: E402
from numba_rnn import clip, losses, optim, plot  # noqa: E402
from tests import reference as ref  # noqa: E402

DTYPES = ["float64", "float32", "float16", "int64", "int32", "bool", "complex128", "object",
          "list"]
LAYOUTS = ["C", "F", "strided", "negative", "readonly"]
VALUES = ["normal", "normal", "huge", "tiny", "subnormal", "nan", "inf"]


class Failure(Exception):
    """The case did not match the reference or raised the wrong thing."""


RESULTS = {}
LOG = None


def _log(target, text):
    if LOG is not None:
        with open(LOG, "a") as f:
            f.write(f"{target}: {text}\n")
            f.flush()
            os.fsync(f.fileno())


def run_case(target, case, fn, valid_args):
    """Run ``fn()``; ``valid_args`` is None when the case is valid, else the names of the
    arguments an error message may name."""
    res = RESULTS.setdefault(target, {"cases": 0, "ok": 0, "rejected": 0, "failures": []})
    res["cases"] += 1
    _log(target, case)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            fn()
    except (ValueError, TypeError) as err:
        if valid_args is None:
            res["failures"].append(f"{case}: valid input raised {type(err).__name__}: {err}")
        elif not any(a in str(err) for a in valid_args):
            res["failures"].append(f"{case}: {type(err).__name__} does not name any of "
                                   f"{valid_args}: {err}")
        else:
            res["rejected"] += 1
        return
    except Failure as err:
        res["failures"].append(f"{case}: {err}")
        return
    except Exception as err:                       # anything else is a defect
        res["failures"].append(f"{case}: unexpected {type(err).__name__}: {err}")
        return
    if valid_args is not None:
        res["failures"].append(f"{case}: invalid input ({valid_args}) was accepted")
    else:
        res["ok"] += 1


# ---------------------------------------------------------------------- arrays
def make_array(data, shape, dtype, layout, values):
    """A float64 'truth' of ``shape`` and how the user hands it in (dtype, layout)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    a = rng.standard_normal(shape)
    scale = {"huge": 1e30, "tiny": 1e-30, "subnormal": 1e-310}.get(values, 1.0)
    a = a * scale
    if values in ("nan", "inf") and a.size:
        idx = tuple(rng.integers(0, s) for s in shape)
        a[idx] = np.nan if values == "nan" else np.inf
    if dtype == "list":
        return a, a.tolist()
    with np.errstate(all="ignore"):
        given_ = a.astype(dtype) if dtype != "object" else a.astype(object)
    if dtype in ("int64", "int32", "bool"):
        given_ = rng.integers(-2, 3, shape).astype(dtype)
    if layout == "F":
        given_ = np.asfortranarray(given_)
    elif layout == "strided" and given_.ndim:
        wide = np.repeat(given_, 2, axis=-1)
        given_ = wide[..., ::2]
    elif layout == "negative" and given_.ndim:
        given_ = given_[::-1].copy()[::-1]
    elif layout == "readonly":
        given_ = given_.copy()
        given_.flags.writeable = False
    return a, given_


def is_float(dtype):
    return dtype in ("float64", "float32", "float16", "list")


def close(ours, theirs, tol, what):
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    if ours.shape != theirs.shape:
        raise Failure(f"{what}: shape {ours.shape}, reference {theirs.shape}")
    finite = np.isfinite(theirs)
    if not np.array_equal(np.isnan(ours), np.isnan(theirs)):
        raise Failure(f"{what}: NaN where the reference has none, or the reverse")
    if not np.array_equal(np.isinf(ours), np.isinf(theirs)):
        raise Failure(f"{what}: inf pattern differs from the reference")
    if finite.any():
        scale = max(1.0, float(np.abs(theirs[finite]).max()))
        err = float(np.abs(ours[finite] - theirs[finite]).max())
        if err > tol * scale:
            raise Failure(f"{what}: max error {err:.3g} > {tol:g} × {scale:.3g}")


# ---------------------------------------------------------------------- the RNN
FLOATS = ["float64", "float32", "float16", "list"]
RNN_FAULTS = [None] * 8 + ["dtype", "D", "ndim", "T0", "N0", "h0", "lengths"]


def rnn_case(data, device):
    fault = data.draw(st.sampled_from(RNN_FAULTS), "fault")
    T = 0 if fault == "T0" else data.draw(st.sampled_from([1, 2, 4]), "T")
    N = 0 if fault == "N0" else data.draw(st.sampled_from([1, 2, 3]), "N")
    D, H = data.draw(st.integers(1, 3), "D"), data.draw(st.integers(1, 4), "H")
    L = data.draw(st.integers(1, 2), "L")
    bi, bf = data.draw(st.booleans(), "bi"), data.draw(st.booleans(), "bf")
    nl = data.draw(st.sampled_from(["tanh", "relu"]), "nl")
    mdt = data.draw(st.sampled_from([np.float64, np.float32]), "model dtype")
    unbatched = data.draw(st.booleans(), "unbatched") and N == 1
    dtype = data.draw(st.sampled_from(DTYPES[3:-1] if fault == "dtype" else FLOATS), "dtype")
    layout = data.draw(st.sampled_from(LAYOUTS), "layout")
    values = data.draw(st.sampled_from(VALUES), "values")
    bad_shape = fault if fault in ("D", "ndim") else None
    h0_kind = "bad" if fault == "h0" else data.draw(st.sampled_from(["none", "ok"]), "h0")
    len_kind = (data.draw(st.sampled_from(["zero", "long", "float"]), "bad lengths")
                if fault == "lengths" else "none")
    dirs = 2 if bi else 1
    rnn = nr.RNN(D, H, num_layers=L, nonlinearity=nl, bidirectional=bi, batch_first=bf,
                 dtype=mdt, seed=1, device=device)
    shape = (T, N, D)
    if bad_shape == "D":
        shape = (T, N, D + 1)
    elif bad_shape == "ndim":
        shape = (T * N * D,)
    truth, x = make_array(data, shape, dtype, layout, values)
    if unbatched and bad_shape is None:
        truth, x = truth[:, 0], (np.asarray(x)[:, 0] if dtype != "list" else
                                 [row[0] for row in x])
    elif bf and len(shape) == 3:
        truth = truth.transpose(1, 0, 2)
        x = np.asarray(x, dtype=object if dtype == "object" else None).transpose(1, 0, 2) \
            if dtype != "list" else truth.tolist()
    rng = np.random.default_rng(0)
    h0 = None
    if h0_kind != "none":
        hs = (L * dirs, N, H) if h0_kind == "ok" else (L * dirs, N, H + 1)
        h0 = 0.3 * rng.standard_normal(hs)
        if unbatched:
            h0 = h0[:, 0]
    lengths = None
    if len_kind != "none" and not unbatched and N > 0 and T > 0:
        lengths = {"ok": rng.integers(1, T + 1, N), "zero": np.zeros(N, int),
                   "long": np.full(N, T + 1), "float": np.full(N, float(T))}[len_kind]
    invalid = []
    if not is_float(dtype):
        invalid.append("x")
    if bad_shape or T == 0 or N == 0:
        invalid.append("x")
    if h0_kind == "bad":
        invalid.append("h0")
    if lengths is not None and len_kind != "ok":
        invalid.append("lengths")
    case = dict(T=T, N=N, D=D, H=H, L=L, bi=bi, bf=bf, nl=nl, model=np.dtype(mdt).name,
                unbatched=unbatched, dtype=dtype, layout=layout, values=values,
                bad_shape=bad_shape, h0=h0_kind, lengths=len_kind, device=device)

    def check():
        out, h_n, cache = rnn.forward(x, h0, lengths=lengths)
        d_out = np.ones(np.shape(out))
        grads, dx, dh0 = rnn.backward(cache, d_out)
        # the reference, in float64, time-major, on what the model actually saw
        xt = np.array(x, dtype=np.float64).astype(mdt).astype(np.float64)   # what it saw
        if unbatched:
            xt = xt[:, None]
        elif bf:
            xt = xt.transpose(1, 0, 2)
        h0t = np.zeros((L * dirs, xt.shape[1], H)) if h0 is None else \
            np.asarray(h0, dtype=mdt).astype(np.float64).reshape(L * dirs, -1, H)
        params = {k: nr.kernels.backend_of(v).to_host(v).astype(np.float64)
                  for k, v in rnn.params.items()}
        masks = None
        if lengths is not None:
            return                       # packed sequences: covered in test_properties
        args = (params, L, bi, nl)
        r_out, r_hn, rc = ref.rnn_forward(xt, h0t, *args, masks=masks)
        r_grads, r_dx, r_dh0, _ = ref.rnn_backward(rc, np.ones_like(r_out),
                                                   np.zeros_like(h0t), *args)
        if unbatched:
            r_out, r_dx, r_hn, r_dh0 = r_out[:, 0], r_dx[:, 0], r_hn[:, 0], r_dh0[:, 0]
        elif bf:
            r_out, r_dx = r_out.transpose(1, 0, 2), r_dx.transpose(1, 0, 2)
        tol = 1e-9 if mdt == np.float64 else 2e-3
        host = nr.kernels.backend_of(grads["W_aa_l0"]).to_host
        close(out, r_out, tol, "out")
        close(h_n, r_hn, tol, "h_n")
        close(dx, r_dx, tol * 10, "dx")
        close(dh0, r_dh0, tol * 10, "dh0")
        for k in r_grads:
            close(host(grads[k]), r_grads[k], tol * 10, f"grads[{k}]")
    run_case(f"RNN ({device})", case, check, sorted(set(invalid)) or None)


# ---------------------------------------------------------------------- losses
def loss_case(data):
    fault = data.draw(st.sampled_from([None] * 6 + ["dtype", "reduction", "mask", "targets"]))
    name = data.draw(st.sampled_from(["cross_entropy", "mse", "bce"]), "loss")
    T, N, C = (data.draw(st.integers(1, 3)) for _ in range(3))
    single = data.draw(st.booleans(), "single step")
    dtype = data.draw(st.sampled_from(["int64", "list"] if fault == "dtype" else
                                      ["float64", "float32"]), "dtype")
    values = data.draw(st.sampled_from(["normal", "huge", "nan"]), "values")
    reduction = "max" if fault == "reduction" else data.draw(st.sampled_from(["sum", "mean"]))
    mask_kind = data.draw(st.sampled_from(["negative", "shape"] if fault == "mask" else
                                          ["none", "bool", "weights"]), "mask")
    tgt_kind = data.draw(st.sampled_from(["range", "dtype", "shape"] if fault == "targets"
                                         else ["ok"]), "targets")
    shape = (N, C) if single else (T, N, C)
    truth, z = make_array(data, shape, dtype, "C", values)
    rng = np.random.default_rng(0)
    steps = (1, N) if single else (T, N)
    if name == "cross_entropy":
        y = rng.integers(0, C, steps[1:] if single else steps)
        y = {"range": y + C, "dtype": y.astype(float), "shape": y[..., None]}.get(tgt_kind, y)
    else:
        y = rng.uniform(0, 1, shape)
        y = {"range": y + 1.5 if name == "bce" else y, "dtype": (y > 0.5),
             "shape": y[..., None]}.get(tgt_kind, y)
    mask = {"none": None, "bool": rng.random(steps) < 0.7, "weights": rng.random(steps),
            "negative": -rng.random(steps), "shape": rng.random((T + 1, N))}[mask_kind]
    if single and mask is not None and mask_kind != "shape":
        mask = mask[0] if mask_kind != "bool" else mask
    fn = losses.get_loss(name)
    out_arg = "logits" if name != "mse" else "pred"
    invalid = []
    if dtype in ("int64", "list"):
        invalid.append(out_arg)
    if tgt_kind in ("dtype", "shape") or (tgt_kind == "range" and name != "mse"):
        invalid.append("targets")
    if reduction == "max":
        invalid.append("reduction")
    if mask_kind in ("negative", "shape"):
        invalid.append("mask")
    zero_mask = mask_kind == "bool" and not np.asarray(mask).any()
    if zero_mask and reduction == "mean":
        invalid.append("mask")
    case = dict(loss=name, shape=shape, dtype=dtype, values=values, reduction=reduction,
                mask=mask_kind, targets=tgt_kind)

    def check():
        L, g = fn(z, y, mask=mask, reduction=reduction)
        z3 = truth.reshape((1, N, C) if single else (T, N, C)).astype(dtype).astype(np.float64)
        m = np.ones((z3.shape[0], N)) if mask is None else \
            np.asarray(mask, dtype=np.float64).reshape(z3.shape[0], N)
        scale = 1.0 / N if reduction == "sum" else 1.0 / m.sum()
        y3 = np.asarray(y).reshape(z3.shape[:2] if name == "cross_entropy" else z3.shape)
        if name == "cross_entropy":
            mx = z3.max(axis=-1, keepdims=True)
            lse = (mx + np.log(np.exp(z3 - mx).sum(-1, keepdims=True)))[..., 0]
            picked = np.take_along_axis(z3, y3[..., None], -1)[..., 0]
            per = lse - picked
            p = np.exp(z3 - lse[..., None])
            grad = p - np.eye(C)[y3]
        elif name == "mse":
            per = ((z3 - y3) ** 2).mean(-1)
            grad = 2 * (z3 - y3) / C
        else:
            per = (np.maximum(z3, 0) - z3 * y3 + np.log1p(np.exp(-np.abs(z3)))).mean(-1)
            grad = (1 / (1 + np.exp(-z3)) - y3) / C
        w = m * scale
        ref_L = float(np.sum(np.where(w > 0, w * per, 0.0)))
        ref_g = np.where(w[..., None] > 0, w[..., None] * grad, 0.0).reshape(np.shape(g))
        tol = 1e-9 if dtype == "float64" else 1e-4
        close(np.float64(L), np.float64(ref_L), tol, "loss")
        close(g, ref_g, tol, "gradient")
    run_case("losses", case, check, sorted(set(invalid)) or None)


# ---------------------------------------------------------------------- clipping
def clip_case(data):
    fault = data.draw(st.sampled_from([None] * 5 + ["dtype", "max_norm", "norm_type"]))
    n = data.draw(st.integers(0, 3), "arrays")
    dtype = data.draw(st.sampled_from(["int64", "object"] if fault == "dtype" else
                                      ["float64", "float32"]), "dtype")
    layout = data.draw(st.sampled_from(LAYOUTS), "layout")
    values = data.draw(st.sampled_from(["normal", "huge", "nan", "inf"]), "values")
    max_norm = data.draw(st.sampled_from([0.0, -1.0, math.inf, math.nan] if fault == "max_norm"
                                         else [1e-3, 1.0, 1e6]), "max_norm")
    p = data.draw(st.sampled_from([0.5, "two"] if fault == "norm_type" else
                                  [2.0, 1.0, math.inf, 3.0]), "norm_type")
    by_value = data.draw(st.booleans(), "by value")
    arrays = [make_array(data, (3, 2), dtype, layout, values) for _ in range(n)]
    grads = {f"g{i}": a for i, (_, a) in enumerate(arrays)}
    invalid = []
    if n and dtype in ("int64", "object"):
        invalid.append("grads")
    if n and layout == "readonly" and dtype not in ("int64", "object"):
        invalid.append("grads")
    if not (max_norm > 0 and math.isfinite(max_norm)):
        invalid.append("max_norm" if not by_value else "clip_value")
    if not by_value and (p == "two" or (p != "two" and p < 1)):
        invalid.append("norm_type")
    case = dict(n=n, dtype=dtype, layout=layout, values=values, max_norm=max_norm, p=p,
                by_value=by_value)

    def check():
        before = {k: np.array(v, dtype=np.float64) for k, v in grads.items()}
        flat = np.concatenate([v.ravel() for v in before.values()]) if n else np.zeros(0)
        if by_value:
            moved = clip.clip_grad_value(grads, max_norm)
            want = {k: np.clip(v, -max_norm, max_norm) for k, v in before.items()}
            if moved != int(np.sum(np.abs(flat) > max_norm)):
                raise Failure(f"clip_grad_value reported {moved} moved entries")
        else:
            norm = clip.clip_grad_norm(grads, max_norm, norm_type=p)
            ref_norm = (np.abs(flat).max() if flat.size else 0.0) if p == math.inf else \
                float(np.sum(np.abs(flat) ** p) ** (1 / p))
            close(np.float64(norm), np.float64(ref_norm), 1e-5, "norm")
            coef = max_norm / (ref_norm + 1e-6)
            ok = math.isfinite(ref_norm) and coef < 1
            want = {k: v * coef if ok else v for k, v in before.items()}
        tol = 1e-12 if dtype == "float64" else 1e-6
        for k in grads:
            close(grads[k], want[k].astype(dtype).astype(np.float64), tol, k)
    run_case("clipping", case, check, sorted(set(invalid)) or None)


# ---------------------------------------------------------------------- optimizers
def optim_case(data):
    fault = data.draw(st.sampled_from([None] * 5 + ["dtype", "grads", "layout", "lr"]))
    kind = data.draw(st.sampled_from(["sgd", "adam"]), "optimizer")
    dtype = "int64" if fault == "dtype" else data.draw(st.sampled_from(["float64", "float32"]))
    g_kind = data.draw(st.sampled_from(["shape", "keys", "int"] if fault == "grads" else
                                       ["ok", "dtype32"]), "grads")
    layout = data.draw(st.sampled_from(["F", "strided"]), "layout") if fault == "layout" \
        else "C"
    lr = data.draw(st.sampled_from([-1.0, math.nan] if fault == "lr" else [1e-2, 0.5]))
    rng = np.random.default_rng(data.draw(st.integers(0, 100)))
    base = {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    params = {k: v.astype(dtype) for k, v in base.items()}
    if layout == "F":
        params["w"] = np.asfortranarray(params["w"])
    elif layout == "strided":
        params["w"] = np.repeat(params["w"], 2, axis=1)[:, ::2]
    g = {k: rng.standard_normal(v.shape) for k, v in base.items()}
    grads = {"shape": {"w": g["w"].T, "b": g["b"]}, "keys": {"w": g["w"]},
             "dtype32": {k: v.astype(np.float32) for k, v in g.items()},
             "int": {k: np.ones(v.shape, int) for k, v in g.items()}}.get(g_kind, g)
    invalid_init = dtype == "int64" or layout != "C" or not (lr >= 0)
    invalid = ["params", "lr"] if invalid_init else []
    if not invalid_init and g_kind in ("shape", "keys", "int"):
        invalid.append("grads")
    case = dict(optimizer=kind, dtype=dtype, grads=g_kind, layout=layout, lr=lr)

    def check():
        opt = optim.make_optimizer(kind, params, lr=lr)
        start = {k: v.astype(np.float64) for k, v in params.items()}
        opt.step(grads)
        for k in params:
            gk = np.asarray(grads[k]).astype(dtype).astype(np.float64)
            if kind == "sgd":
                want = start[k] - lr * gk
            else:               # Adam's first step: p - lr · g / (|g| + ε) (bias-corrected)
                want = start[k] - lr * gk / (np.abs(gk) + 1e-8)
            close(params[k], want, 1e-10 if dtype == "float64" else 1e-5, k)
    run_case("optimizers", case, check, sorted(set(invalid)) or None)


# ---------------------------------------------------------------------- models
def model_case(data):
    """A model's loss_and_grad: either clear errors, or ∂L/∂θ matching central
    differences (float64) on a random parameter entry."""
    fault = data.draw(st.sampled_from([None] * 5 + ["x dtype", "x shape", "y dtype",
                                                    "y shape", "y range"]), "fault")
    arch = data.draw(st.sampled_from(["ManyToOne", "ManyToMany", "OneToOne"]), "model")
    loss = data.draw(st.sampled_from(["cross_entropy", "mse", "bce"]), "loss")
    T, N, D, H, C = (data.draw(st.integers(1, 3)) for _ in range(5))
    C += 1
    values = data.draw(st.sampled_from(["normal", "huge", "tiny"]), "values")
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    model = getattr(nr, arch)(D, H, C, loss=loss, dtype=np.float64, seed=1)
    xs = (N, D) if arch == "OneToOne" else (T, N, D)
    if fault == "x shape":
        xs = (*xs[:-1], D + 1)
    _, x = make_array(data, xs, "int64" if fault == "x dtype" else "float64", "C", values)
    ys = (N,) if arch != "ManyToMany" else (T, N)
    if loss == "cross_entropy":
        y = rng.integers(0, C, ys)
        y = {"y dtype": y.astype(float), "y range": y + C}.get(fault, y)
    else:
        y = rng.uniform(0, 1, (*ys, C))
        y = {"y dtype": y.astype(int), "y range": y + 2 if loss == "bce" else y}.get(fault, y)
    if fault == "y shape":
        y = y[..., None]
    invalid = None
    if fault in ("x dtype", "x shape"):
        invalid = ["x"]
    elif fault in ("y dtype", "y shape") or (fault == "y range" and loss != "mse"):
        invalid = ["targets", "y"]
    case = dict(model=arch, loss=loss, T=T, N=N, D=D, H=H, C=C, values=values, fault=fault)

    def check():
        L, grads = model.loss_and_grad(x, y)
        name = sorted(grads)[data.draw(st.integers(0, len(grads) - 1), "param")]
        p = model.params[name].reshape(-1)
        i = data.draw(st.integers(0, p.size - 1), "entry")
        if values != "normal" or not math.isfinite(L):
            return                      # finite differences only where they are meaningful
        eps, old = 1e-6, p[i]
        p[i] = old + eps
        up = model.loss_and_grad(x, y)[0]
        p[i] = old - eps
        down = model.loss_and_grad(x, y)[0]
        p[i] = old
        fd = (up - down) / (2 * eps)
        g = grads[name].reshape(-1)[i]
        if abs(g - fd) > 1e-5 * max(1.0, abs(fd)):
            raise Failure(f"∂L/∂{name}[{i}] = {g}, central difference {fd}")
    run_case("models", case, check, invalid)


# ---------------------------------------------------------------------- analysis and plots
def analysis_case(data):
    fault = data.draw(st.sampled_from([None] * 5 + ["T0", "dtype", "layer", "nan"]), "fault")
    T = 0 if fault == "T0" else data.draw(st.sampled_from([1, 3]), "T")
    D, H = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    dtype = "int64" if fault == "dtype" else data.draw(st.sampled_from(["float64", "float32",
                                                                         "list"]), "dtype")
    values = "nan" if fault == "nan" else data.draw(st.sampled_from(["normal", "huge"]))
    fn_name = data.draw(st.sampled_from(["hidden_grad_norms", "jacobian_norms",
                                         "jacobian_singular_values", "lyapunov_exponents",
                                         "temporal_credit"]), "function")
    layer = data.draw(st.sampled_from([1, -1]), "layer") if fault == "layer" else 0
    rnn = nr.RNN(D, H, dtype=np.float64, seed=0)
    truth, x = make_array(data, (T, 2, D), dtype, "C", values)
    invalid = []
    if dtype in ("int64",) or T == 0:
        invalid.append("x")
    if dtype == "list" and T == 0:
        invalid.append("x")
    if layer != 0 and fn_name != "hidden_grad_norms":
        invalid.append("layer")
    if values == "nan" and fn_name != "hidden_grad_norms" and T > 0:
        invalid.append("x")                     # Jacobians of non-finite states: refused
    case = dict(fn=fn_name, T=T, D=D, H=H, dtype=dtype, values=values, layer=layer)
    A = nr.analysis

    def check():
        if fn_name == "hidden_grad_norms":
            r = A.hidden_grad_norms(rnn, x, np.ones((T, 2, H)))
            arr = np.asarray(r["l0"] if isinstance(r, dict) else r)
            if arr.shape[0] != T:
                raise Failure(f"hidden_grad_norms has shape {arr.shape}")
        elif fn_name == "temporal_credit":
            r = np.asarray(A.temporal_credit(rnn, x, np.ones((T, 2, H)), layer=layer))
            if r.shape[0] != T:
                raise Failure(f"temporal_credit has shape {r.shape}")
        else:
            r = np.asarray(getattr(A, fn_name)(rnn, x, layer=layer))
            if fn_name == "jacobian_norms" and values == "normal" and \
                    not math.isclose(float(r[-1]), 1.0, rel_tol=1e-9):
                raise Failure(f"J[T-1] = {r[-1]}, not 1")
        if values == "normal" and not np.isfinite(r if not isinstance(r, dict)
                                                  else list(r.values())[0]).all():
            raise Failure("non-finite result for finite input")
    run_case("analysis", case, check, sorted(set(invalid)) or None)


def plot_case(data):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fn_name = data.draw(st.sampled_from(["grad_norms_over_time", "temporal_credit_map",
                                         "singular_value_spectrum", "lyapunov_spectrum",
                                         "eigenvalues"]), "function")
    kind = data.draw(st.sampled_from(["ok", "ok", "nan", "empty", "ndim", "object"]), "data")
    rng = np.random.default_rng(0)
    v = np.abs(rng.standard_normal(6)) + 0.1
    if kind == "nan":
        v[2] = np.nan
    elif kind == "empty":
        v = v[:0]
    elif kind == "ndim":
        v = v.reshape(2, 3, 1)
    elif kind == "object":
        v = np.array(["a", "b"], dtype=object)
    if fn_name == "temporal_credit_map":
        arg = np.abs(rng.standard_normal((4, 4))) if kind in ("ok", "nan") else v
        if kind == "nan":
            arg[1, 1] = np.nan
    elif fn_name == "eigenvalues":
        arg = {"x": v.astype(complex) if kind in ("ok", "nan") else v}
    elif fn_name == "lyapunov_spectrum":
        arg = {"x": v - 0.5 if kind in ("ok", "nan") else v}
    else:
        arg = {"x": v}
    invalid = None if kind in ("ok", "nan") else ["curves", "spectra", "exponents", "eigs",
                                                   "C", "values"]
    case = dict(fn=fn_name, data=kind)

    def check():
        try:
            getattr(plot, fn_name)(arg)
        finally:
            plt.close("all")
    run_case("plots", case, check, invalid)


# ---------------------------------------------------------------------- driver
def main():
    global LOG
    p = argparse.ArgumentParser()
    p.add_argument("--examples", type=int, default=100)
    p.add_argument("--device", default="cpu")
    p.add_argument("--log", default=None)
    args = p.parse_args()
    LOG = args.log
    budget = settings(max_examples=args.examples, deadline=None, database=None,
                      derandomize=True, suppress_health_check=list(HealthCheck))
    targets = [lambda d: rnn_case(d, args.device)]
    if args.device == "cpu":
        targets += [model_case, loss_case, clip_case, optim_case, analysis_case, plot_case]
    for target in targets:
        budget(given(st.data())(target))()
    total = sum(r["cases"] for r in RESULTS.values())
    failed = sum(len(r["failures"]) for r in RESULTS.values())
    print(json.dumps({"cases": total, "failures": failed, "targets": RESULTS}))


if __name__ == "__main__":
    main()
