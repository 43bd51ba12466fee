"""Train the residual MLP family of :mod:`dropnet.model` with numpy, no torch.

The network of ``n`` blocks, width ``d`` and hidden size ``h`` is trained on a synthetic
regression task with a manual forward and backward pass, MSE loss, mini-batches and Adam or
SGD with momentum (weight decay decoupled for both, AdamW style). Layers start from PyTorch's
default ``nn.Linear`` initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and
biases.

Parameters live in one flat vector (float32 by default, like torch; float64 for gradient
checks) with views per layer, so an optimizer step is one fused Numba loop (``cache=True``) over
all of them; the matrix products go through numpy's BLAS.
Training is bit-reproducible for a fixed seed on one machine and BLAS build (the mini-batch
order, initialisation and data all come from ``numpy.random.SeedSequence(seed)``).

The returned :class:`dropnet.model.Network` holds float64 arrays whose values are exactly
representable in float32 (the trained float32 weights, widened), which is what
:mod:`dropnet.io` gives back after a round trip through any piece format.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
from numba import njit

from . import _numba_start  # noqa: F401  (before the first kernel loads)

from .model import Network

OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class TrainConfig:
    """Shape of the network, the data and the optimisation recipe.

    The defaults train plainly (Adam at 1e-3 on a fixed data set, up to 200 epochs, stopping
    at a plateau); :func:`dropnet.generate.recipe` gives the measured strong/puzzle/weak
    regimes of the pairing signal.

    ``epochs`` is the budget; when ``patience`` > 0 training stops earlier once the epoch
    loss has not improved by a relative ``tol`` for ``patience`` epochs (a plateau).
    ``warmup`` ramps the learning rate up linearly over that many epochs; ``clip`` > 0
    rescales each mini-batch gradient to at most that global L2 norm (deep nets trained with
    SGD at a high rate need both to survive the first steps).
    ``noise`` is the standard deviation of the target noise relative to the teacher's
    (unit-variance) signal; ``teacher_hidden`` the size of the random teacher network;
    ``resample`` draws a fresh training set from the teacher every epoch (the net cannot
    memorise its noise; the rows returned, and written as the data, are the first draw).
    """

    blocks: int = 8
    width: int = 16
    hidden: int = 32
    rows: int = 2000
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 200
    batch_size: int = 64
    seed: int = 0
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup: float = 0.0
    clip: float = 0.0
    patience: int = 20
    tol: float = 1e-3
    noise: float = 0.3
    teacher_hidden: int = 32
    resample: bool = False
    dtype: str = "float32"

    def validate(self) -> None:
        """Raise ValueError on a config that cannot be trained."""
        for name in ("blocks", "width", "hidden", "rows", "epochs", "batch_size", "teacher_hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not (self.lr > 0 and min(self.weight_decay, self.noise, self.warmup, self.clip) >= 0):
            raise ValueError("lr must be > 0; weight_decay, noise, warmup and clip >= 0")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")

    def to_dict(self) -> dict:
        """Plain JSON-able dict of the config."""
        out = asdict(self)
        out["betas"] = list(self.betas)
        return out


@dataclass
class History:
    """Per-epoch mean training loss (MSE over the epoch's mini-batches), wall time and why
    training stopped (``"budget"`` or ``"plateau"``)."""

    loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str = "budget"

    @property
    def epochs(self) -> int:
        return len(self.loss)


# --------------------------------------------------------------------------- parameters


@dataclass
class Params:
    """Flat parameter vector ``flat`` (P,) and views into it:
    w_in (n, h, d), b_in (n, h), w_out (n, d, h), b_out (n, d), w_last (d,), b_last (1,)."""

    flat: np.ndarray
    w_in: np.ndarray
    b_in: np.ndarray
    w_out: np.ndarray
    b_out: np.ndarray
    w_last: np.ndarray
    b_last: np.ndarray


def param_views(flat: np.ndarray, n: int, d: int, h: int) -> Params:
    """Split ``flat`` (P,) with P = n*(2hd + h + d) + d + 1 into per-layer views."""
    shapes = [(n, h, d), (n, h), (n, d, h), (n, d), (d,), (1,)]
    views, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        views.append(flat[start:start + size].reshape(shape))
        start += size
    if start != flat.size:
        raise ValueError(f"flat vector of {flat.size} parameters, expected {start}")
    return Params(flat, *views)


def param_count(n: int, d: int, h: int) -> int:
    """Number of scalars in a network of n blocks, width d, hidden h."""
    return n * (2 * h * d + h + d) + d + 1


def init_params(n: int, d: int, h: int, rng: np.random.Generator, dtype=np.float32) -> Params:
    """PyTorch's default nn.Linear init: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    p = param_views(np.empty(param_count(n, d, h), dtype=dtype), n, d, h)
    for view, fan_in in ((p.w_in, d), (p.b_in, d), (p.w_out, h), (p.b_out, h),
                         (p.w_last, d), (p.b_last, d)):
        bound = 1.0 / np.sqrt(fan_in)
        view[...] = rng.uniform(-bound, bound, size=view.shape)
    return p


def to_network(p: Params) -> Network:
    """Copy trained parameters into a float64 :class:`Network` (float32-exact values)."""
    f = lambda a: np.array(a, dtype=np.float64)  # noqa: E731
    return Network(f(p.w_in), f(p.b_in), f(p.w_out), f(p.b_out), f(p.w_last),
                   float(p.b_last[0]))


def from_network(net: Network, dtype=np.float32) -> Params:
    """Pack a :class:`Network` into a flat parameter vector of ``dtype``."""
    n, d, h = net.blocks, net.width, net.hidden
    p = param_views(np.empty(param_count(n, d, h), dtype=dtype), n, d, h)
    p.w_in[...], p.b_in[...], p.w_out[...] = net.w_in, net.b_in, net.w_out
    p.b_out[...], p.w_last[...], p.b_last[0] = net.b_out, net.w_last, net.b_last
    return p


# --------------------------------------------------------------------------- forward / backward


def forward_cached(p: Params, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward pass of x (B, d) keeping what backward needs.

    Returns y (B,), the residual stream xs (n+1, B, d) (xs[k] enters block k) and the
    pre-activations zs (n, B, h), all in the parameters' dtype.
    """
    n, h, d = p.w_in.shape
    dtype = p.flat.dtype
    xs = np.empty((n + 1, x.shape[0], d), dtype=dtype)
    zs = np.empty((n, x.shape[0], h), dtype=dtype)
    xs[0] = x
    act = np.empty((x.shape[0], h), dtype=dtype)
    for k in range(n):
        np.matmul(xs[k], p.w_in[k].T, out=zs[k])
        zs[k] += p.b_in[k]
        np.maximum(zs[k], 0, out=act)
        np.matmul(act, p.w_out[k].T, out=xs[k + 1])
        xs[k + 1] += p.b_out[k]
        xs[k + 1] += xs[k]
    y = xs[n] @ p.w_last + p.b_last[0]
    return y, xs, zs


def backward(p: Params, grad: Params, xs: np.ndarray, zs: np.ndarray,
             g_y: np.ndarray) -> None:
    """Back-propagate dL/dy ``g_y`` (B,) through the cached pass into ``grad`` (overwritten).

    xs (n+1, B, d) and zs (n, B, h) come from :func:`forward_cached`.
    """
    n = p.w_in.shape[0]
    grad.w_last[...] = g_y @ xs[n]
    grad.b_last[0] = g_y.sum()
    g_x = np.multiply.outer(g_y, p.w_last)
    act = np.empty_like(zs[0])
    for k in range(n - 1, -1, -1):
        np.maximum(zs[k], 0, out=act)
        np.matmul(g_x.T, act, out=grad.w_out[k])
        grad.b_out[k] = g_x.sum(axis=0)
        g_z = g_x @ p.w_out[k]
        g_z *= zs[k] > 0
        np.matmul(g_z.T, xs[k], out=grad.w_in[k])
        grad.b_in[k] = g_z.sum(axis=0)
        g_x += g_z @ p.w_in[k]


def loss_and_grad(p: Params, grad: Params, x: np.ndarray, t: np.ndarray) -> float:
    """MSE of the network on x (B, d) against t (B,); fills ``grad`` with its gradient."""
    y, xs, zs = forward_cached(p, x)
    r = y - t
    backward(p, grad, xs, zs, (2.0 / len(t)) * r)
    return float(np.mean(r.astype(np.float64) ** 2))


def predict(p: Params, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Network output (m,) for x (m, d), computed in the parameters' dtype."""
    x = x.astype(p.flat.dtype, copy=False)
    return np.concatenate([forward_cached(p, x[i:i + batch])[0]
                           for i in range(0, len(x), batch)])


def predict_float32(net: Network, x: np.ndarray) -> np.ndarray:
    """The float32 output (m,) of ``net`` on x (m, d), as torch would compute it."""
    return predict(from_network(net, np.float32), x.astype(np.float32))


# --------------------------------------------------------------------------- optimizers


@njit(cache=True)
def _adam_step(p, g, m, v, lr, beta1, beta2, eps, wd, step):  # pragma: no cover - numba
    """In-place AdamW step on flat arrays p, g, m, v (P,), torch's formula."""
    one = p.dtype.type(1.0)
    b1, b2 = p.dtype.type(beta1), p.dtype.type(beta2)
    bc1 = 1.0 - beta1 ** step
    step_size = p.dtype.type(lr / bc1)
    bc2_sqrt = p.dtype.type(np.sqrt(1.0 - beta2 ** step))
    decay = p.dtype.type(1.0 - lr * wd)
    e = p.dtype.type(eps)
    for i in range(p.size):
        if wd != 0.0:
            p[i] *= decay
        m[i] = b1 * m[i] + (one - b1) * g[i]
        v[i] = b2 * v[i] + (one - b2) * g[i] * g[i]
        p[i] -= step_size * m[i] / (np.sqrt(v[i]) / bc2_sqrt + e)


@njit(cache=True)
def _sgd_step(p, g, buf, lr, momentum, wd, first):  # pragma: no cover - numba
    """In-place SGD-with-momentum step (decoupled weight decay) on flat arrays (P,)."""
    mu, rate = p.dtype.type(momentum), p.dtype.type(lr)
    decay = p.dtype.type(1.0 - lr * wd)
    for i in range(p.size):
        if wd != 0.0:
            p[i] *= decay
        buf[i] = g[i] if first else mu * buf[i] + g[i]
        p[i] -= rate * buf[i]


class Optimizer:
    """Adam(W) or SGD with momentum over a flat parameter vector, state kept here."""

    def __init__(self, config: TrainConfig, flat: np.ndarray, steps_per_epoch: int = 1):
        self.config, self.step_count = config, 0
        self.warmup_steps = config.warmup * steps_per_epoch
        self.m = np.zeros_like(flat)
        self.v = np.zeros_like(flat) if config.optimizer == "adam" else self.m

    def rate(self) -> float:
        """Learning rate of the current step (linear warm-up, then constant)."""
        if self.step_count >= self.warmup_steps:
            return self.config.lr
        return self.config.lr * self.step_count / self.warmup_steps

    def step(self, flat: np.ndarray, g: np.ndarray) -> None:
        """Update ``flat`` (P,) in place from gradient ``g`` (P,) (clipped in place)."""
        c = self.config
        self.step_count += 1
        if c.clip > 0:
            norm = float(np.sqrt(np.dot(g, g)))
            if norm > c.clip:
                g *= g.dtype.type(c.clip / norm)
        lr = self.rate()
        if c.optimizer == "adam":
            _adam_step(flat, g, self.m, self.v, lr, c.betas[0], c.betas[1], c.eps,
                       c.weight_decay, self.step_count)
        else:
            _sgd_step(flat, g, self.m, lr, c.momentum, c.weight_decay, self.step_count == 1)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Teacher:
    """A random smooth target: y = (tanh(x a + c) w + sin(2 x.s) + x.s - mean) / std with
    a (d, k), c (k,), w (k,), s (d,); mean and std calibrate it to zero mean, unit variance."""

    a: np.ndarray
    c: np.ndarray
    w: np.ndarray
    skip: np.ndarray
    mean: float = 0.0
    std: float = 1.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Noise-free target (m,) for x (m, d), float64."""
        z = x @ self.skip
        raw = np.tanh(x @ self.a + self.c) @ self.w + np.sin(2.0 * z) + z
        return (raw - self.mean) / self.std


def make_teacher(width: int, hidden: int, rng: np.random.Generator) -> Teacher:
    """Draw a teacher of input width d and ``hidden`` tanh units, calibrated on 4096 rows."""
    a = rng.standard_normal((width, hidden)) * (1.5 / np.sqrt(width))
    c = rng.uniform(-0.5, 0.5, size=hidden)
    w = rng.standard_normal(hidden)
    skip = rng.standard_normal(width) * (0.5 / np.sqrt(width))
    raw = Teacher(a, c, w, skip)(rng.standard_normal((4096, width)))
    return Teacher(a, c, w, skip, float(raw.mean()), float(raw.std()))


def sample(teacher: Teacher, rows: int, noise: float,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """x (rows, d) standard Gaussian and y (rows,) = teacher(x) + noise * N(0, 1), float32."""
    x = rng.standard_normal((rows, teacher.a.shape[0])).astype(np.float32)
    y = teacher(x.astype(np.float64)) + noise * rng.standard_normal(rows)
    return x, y.astype(np.float32)


def make_data(config: TrainConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic regression data for ``config``: x (rows, d), y (rows,) float32 from a fresh
    random teacher (see :func:`make_teacher`, :func:`sample`)."""
    teacher = make_teacher(config.width, config.teacher_hidden, rng)
    return sample(teacher, config.rows, config.noise, rng)


# --------------------------------------------------------------------------- training loop


def _streams(seed: int) -> tuple[np.random.Generator, ...]:
    """Independent generators for the data, the initialisation, the batch order and the
    fresh rows of ``resample``."""
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))


def _plateaued(loss: list[float], patience: int, tol: float) -> bool:
    """True when the best loss of the last ``patience`` epochs is not ``tol`` (relative)
    below the best before them."""
    if patience <= 0 or len(loss) <= patience:
        return False
    before, recent = min(loss[:-patience]), min(loss[-patience:])
    return recent > before * (1.0 - tol)


def run_epoch(p: Params, grad: Params, opt: Optimizer, x: np.ndarray, y: np.ndarray,
              batch_size: int, rng: np.random.Generator) -> float:
    """One pass over x (m, d), y (m,) in shuffled mini-batches; mean batch loss."""
    order = rng.permutation(len(x))
    total = 0.0
    for start in range(0, len(x), batch_size):
        idx = order[start:start + batch_size]
        loss = loss_and_grad(p, grad, x[idx], y[idx])
        if not np.isfinite(loss):
            return float("nan")
        total += loss * len(idx)
        opt.step(p.flat, grad.flat)
    return total / len(x)


def train(config: TrainConfig, progress: Callable[[int, float], None] | None = None
          ) -> tuple[Network, np.ndarray, np.ndarray, History]:
    """Generate data and train a network on it.

    Returns the trained :class:`Network` (float64 arrays holding float32 values), the inputs
    x (rows, width) and targets y_true (rows,) as float32, and the :class:`History`.
    ``progress(epoch, loss)`` is called after every epoch (epoch counted from 1).
    """
    config.validate()
    dtype = np.dtype(config.dtype)
    data_rng, init_rng, batch_rng, fresh_rng = _streams(config.seed)
    teacher = make_teacher(config.width, config.teacher_hidden, data_rng)
    x, y = sample(teacher, config.rows, config.noise, data_rng)
    p = init_params(config.blocks, config.width, config.hidden, init_rng, dtype)
    grad = param_views(np.zeros_like(p.flat), config.blocks, config.width, config.hidden)
    opt = Optimizer(config, p.flat, -(-config.rows // config.batch_size))
    xt, yt = x.astype(dtype), y.astype(dtype)
    history, started = History(), time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        if config.resample and epoch > 1:
            xt, yt = (a.astype(dtype) for a in sample(teacher, config.rows, config.noise, fresh_rng))
        with np.errstate(over="ignore", invalid="ignore"):
            loss = run_epoch(p, grad, opt, xt, yt, config.batch_size, batch_rng)
        if not np.isfinite(loss):
            raise FloatingPointError(f"training diverged at epoch {epoch} (lr {config.lr}); "
                                     "lower the learning rate or add warm-up/clipping")
        history.loss.append(loss)
        if progress is not None:
            progress(epoch, loss)
        if _plateaued(history.loss, config.patience, config.tol):
            history.stopped = "plateau"
            break
    history.seconds = time.perf_counter() - started
    return to_network(p), x, y, history
