"""Adam exactly as ``torch.optim.Adam(lr, weight_decay=...)`` updates, for NNabla parameters.

NNabla's own ``solvers.Adam`` folds the bias corrections into the step size and adds ``eps``
to ``sqrt(v)`` before the second-moment correction, i.e. torch's update with ``eps`` replaced
by ``eps / sqrt(1 - beta2^t)``: 32x larger at the first step. Wherever a gradient is within
two orders of magnitude of 1e-6 (LSTM weights often are), the two take different steps, and
after three steps the weights of the reference and of NNabla differ by up to 2% of their
scale (tests/test_train_parity.py). This solver takes torch's steps:

    g <- g + weight_decay * w
    m <- m + (1 - beta1) (g - m)            (torch's lerp)
    v <- beta2 v + (1 - beta2) g^2
    w <- w - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

in one pass per parameter (a numba kernel, blocks on two threads). Its state has NNabla's
Adam layout (``mean``, ``var``, ``t`` per parameter; `save_states` writes NNabla's file
layout), so checkpoints move between the two. It reads and writes the parameters through
host memory: it is the CPU's solver (a GPU run keeps NNabla's Adam).

Twin parameters. torch's LSTM has two biases, ``b_ih`` and ``b_hh``, that always receive the
same gradient; NNabla's (and unmix's files) hold their sum ``b``. Adam moves each of the two by
its own normalised step, so the sum moves about twice as fast as a single bias would, and weight
decay pulls each half towards 0 on its own (three steps of NNabla's Adam leave the weights of
the reference 0.6% of their scale away). A twin parameter keeps its second half ``b_hh`` and
that half's moments in its state (``hh``, ``mean_hh``, ``var_hh``; ``mean`` and ``var`` are the
first half's), and ``b`` takes both halves' steps: torch's update exactly.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from unmix.dsp import jit

_BLOCK = 1 << 20  # values per work item: large enough to amortise a thread hand-off


@jit.kernel
def _adam_kernel(w, g, m, v, start, stop, step_size, bc2_sqrt, beta2, one_minus_beta1, one_minus_beta2, eps, decay):
    """One Adam step on ``w[start:stop]`` (flat float32 arrays), in place. ``1 - beta`` come
    rounded from float64, as torch's: 1 - float32(0.999) is 1.3e-5 off 0.001."""
    for i in range(start, stop):
        grad = g[i] + decay * w[i]
        m[i] += one_minus_beta1 * (grad - m[i])
        v[i] = beta2 * v[i] + one_minus_beta2 * grad * grad
        w[i] -= step_size * (m[i] / (math.sqrt(v[i]) / bc2_sqrt + eps))


@dataclass
class AdamState:
    """One parameter's state, NNabla's layout: ``pstate`` holds ``mean`` and ``var`` Variables."""

    pstate: dict = field(default_factory=dict)
    t: int = 0


class Adam:
    """torch's Adam for a dict of NNabla parameters, with the calls of an NNabla solver that
    `unmix.training.train.Trainer` makes (``set_parameters``, ``zero_grad``, ``weight_decay``, ``update``,
    ``check_inf_or_nan_grad``, learning rate and state access).

    ``weight_decay(rate)`` takes effect in the next ``update`` (fused into its pass), where
    NNabla's adds ``rate * w`` to the gradients at once: the same step.
    """

    def __init__(self, alpha=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, workers=2):
        self.alpha, self.beta1, self.beta2, self.eps = float(alpha), beta1, beta2, eps
        self.workers = workers
        self.params, self.states = {}, {}
        self._decay = 0.0

    def set_parameters(self, params, twins=None):
        """Args:
            params: name -> nn.Variable.
            twins: name -> the second half ``b_hh`` of a parameter that stands for the sum of two
                (see the module docstring), or None for two equal halves.
        """
        for name, var in params.items():
            self.params[name] = var
            self.states[name] = AdamState({k: _variable(np.zeros(var.shape, np.float32)) for k in ("mean", "var")})
        for name, half in (twins or {}).items():
            self.split_twin(name, half)

    def split_twin(self, name, half=None):
        """Make parameter `name` a twin whose second half is `half` (None: half the parameter),
        with the first half's moments for the second's (exact where the halves were equal)."""
        state, value = self.states[name], self.params[name].d
        half = value / 2 if half is None else np.asarray(half, np.float32).reshape(value.shape)
        state.pstate["hh"] = _variable(half.astype(np.float32))
        for key in ("mean", "var"):
            state.pstate[f"{key}_hh"] = _variable(state.pstate[key].d.copy())

    def learning_rate(self):
        return self.alpha

    def set_learning_rate(self, lr):
        self.alpha = float(lr)

    def zero_grad(self):
        for var in self.params.values():
            var.grad.zero()

    def check_inf_or_nan_grad(self):
        return not all(np.isfinite(var.g).all() for var in self.params.values())

    def weight_decay(self, rate):
        self._decay = float(rate)

    def update(self):
        """One step for every parameter (blocks of `_BLOCK` values, on `workers` threads)."""
        items, twins = [], []
        for name, var in self.params.items():
            state = self.states[name]
            state.t += 1
            step_size = self.alpha / (1.0 - self.beta1 ** state.t)
            bc2_sqrt = math.sqrt(1.0 - self.beta2 ** state.t)
            w, g = _flat(var.data), _flat(var.grad)
            m, v = (_flat(state.pstate[k].data) for k in ("mean", "var"))
            if "hh" in state.pstate:  # both halves step; the parameter is their sum
                hh, m_hh, v_hh = (_flat(state.pstate[k].data) for k in ("hh", "mean_hh", "var_hh"))
                ih = w - hh
                items += [((ih, g, m, v), 0, w.size, step_size, bc2_sqrt),
                          ((hh, g, m_hh, v_hh), 0, w.size, step_size, bc2_sqrt)]
                twins.append((w, ih, hh))
            else:
                items += [((w, g, m, v), start, min(start + _BLOCK, w.size), step_size, bc2_sqrt)
                          for start in range(0, w.size, _BLOCK)]
        f32 = np.float32
        constants = (f32(self.beta2), f32(1.0 - self.beta1), f32(1.0 - self.beta2), f32(self.eps), f32(self._decay))

        def run(item):
            (w, g, m, v), start, stop, step_size, bc2_sqrt = item
            _adam_kernel(w, g, m, v, start, stop, f32(step_size), f32(bc2_sqrt), *constants)

        jit.run(run, items, self.workers)
        for w, ih, hh in twins:
            np.add(ih, hh, out=w)
        self._decay = 0.0

    def get_states(self):
        return self.states

    def set_states(self, states):
        for name, state in states.items():
            mine = self.states[name]
            for key, var in state.pstate.items():
                mine.pstate[key].d = var.d
            mine.t = int(state.t)

    def save_states(self, path):
        """NNabla's ``Solver.save_states`` .h5 layout: ``<param>/mean``, ``<param>/var``, ``<param>/t``."""
        import h5py

        with h5py.File(path, "w") as f:
            for name, state in self.states.items():
                for key, var in state.pstate.items():
                    f[f"{name}/{key}"] = var.d
                f[f"{name}/t"] = np.int64(state.t)



def _variable(array):
    import nnabla as nn

    return nn.Variable.from_numpy_array(array)


def _flat(ndarray):
    """A writable flat float32 view of an NNabla NdArray."""
    return ndarray.cast(np.float32).reshape(-1)
