"""The optimisation of one network: its Adam solver and training graph, one step at a time.

On the CPU the graph is built from the coarse functions of `unmix.models.fast_ops` and the solver
is `unmix.training.solver.Adam` (torch's update to the last bit of eps); on a GPU the stock NNabla
graph and NNabla's Adam (see `unmix.training.train`).
"""
import math

import h5py

from unmix.errors import UnmixError
from unmix.io.files import atomic_path
from unmix.training.checkpoint import signals_held

LSTM_BIAS = "lstm/lstm/bias"  # the LSTM biases that the CPU's Adam steps as torch's two (`unmix.training.solver`)


class NonFiniteLoss(UnmixError):
    """The loss or its gradients became NaN or infinite: the update was not applied."""


class Trainer:
    """One model, its Adam solver and its training graph (built once per batch shape).

    Args:
        model: `unmix.models.nnabla_graph.OpenUnmix`.
        comm: a NNabla data-parallel communicator, or None for one process.
        fast: the CPU's training: the coarse functions of `unmix.models.fast_ops` and torch's Adam (`unmix.training.solver`);
            a GPU keeps the stock NNabla graph).
        dropout: LSTM dropout between layers; None: the reference's (`unmix.models.nnabla_graph.LSTM_DROPOUT`).
        lstm_bias_hh: with `fast`, torch's ``b_hh`` half of the LSTM bias ``(nb_layers, D, 4, H)``
            when known (a converted reference checkpoint), or a dict parameter name -> that half
            (X-UMX: ``<source>/lstm/lstm/bias``); None: half the bias. See `unmix.training.solver`.
        loss_options: extra keywords of ``model.build_loss`` (X-UMX: ``n_hop``, ``mcoef``).

    An Open-Unmix model trains on batches ``(x, y)``; an X-UMX one (`unmix.models.nnabla_graph.CrossNet`) on the
    five arrays of `unmix.training.datasets.XumxDataset`.
    """

    def __init__(self, model, lr=1e-3, weight_decay=1e-5, comm=None, fast=False, dropout=None, lstm_bias_hh=None,
                 loss_options=None):
        import nnabla.solvers as S

        self.model, self.weight_decay, self.comm = model, float(weight_decay), comm
        self.fast, self.dropout, self.loss_options = fast, dropout, dict(loss_options or {})
        self.params = model.trainable_parameters()
        self.running_stats = {k: v for k, v in model.parameters.items() if k not in self.params}
        if fast:  # torch's Adam to the last bit of eps (see unmix.training.solver); beta1 0.9, beta2 0.999, eps 1e-8
            from unmix.training.solver import Adam

            self.solver = Adam(alpha=lr)
            # b_ih + b_hh: each LSTM bias (every X-UMX branch has one)
            self.solver.set_parameters(self.params, twins={n: _twin(lstm_bias_hh, n) for n in self.params
                                                           if n.endswith(LSTM_BIAS)})
        else:
            self.solver = S.Adam(alpha=lr)
            self.solver.set_parameters(self.params)
        self._graph = None

    @property
    def frames_first(self):
        """The layout of the batches `train_step` takes: frames first for the fast CPU graph (see `unmix.models.fast_ops`)."""
        return self.fast

    @property
    def lr(self):
        return self.solver.learning_rate()

    def set_lr(self, lr):
        self.solver.set_learning_rate(float(lr))

    def build(self, *shapes):
        """The training graph for batches of these shapes (built once per shapes; one shape: x and y's)."""
        return self._graph_for(shapes * 2 if len(shapes) == 1 else shapes)

    def _graph_for(self, shapes):
        import nnabla as nn

        from unmix.models.nnabla_graph import LSTM_DROPOUT

        shapes = tuple(tuple(shape) for shape in shapes)
        if self._graph is None or tuple(v.shape for v in self._graph[0]) != shapes:
            inputs = [nn.Variable(shape) for shape in shapes]
            dropout = LSTM_DROPOUT if self.dropout is None else self.dropout
            with nn.auto_forward(False):
                loss = self.model.build_loss(*inputs, fast=self.fast, dropout=dropout, **self.loss_options)
            self._graph = (inputs, loss)
        return self._graph

    def train_step(self, *batch):
        """One Adam step on a batch: x, y float32 ``(nb_samples, nb_channels, nb_bins, nb_frames)``,
        or ``(nb_samples, nb_channels, nb_frames, nb_bins)`` when `frames_first` (the fast CPU graph);
        X-UMX: the five arrays of `unmix.training.datasets.XumxDataset`, batched.

        Returns the batch's MSE (averaged over processes). Raises `NonFiniteLoss` before updating
        anything when the loss or a gradient is not finite. Ctrl-C (or SIGTERM) during the step
        raises KeyboardInterrupt when the step is done: NNabla would turn it into a SystemError had
        it arrived inside one of the Python functions of the CPU graph (`unmix.models.fast_ops`).
        """
        with signals_held():
            return self._step(batch)

    def _step(self, batch):
        inputs, loss = self._graph_for([a.shape for a in batch])
        for variable, array in zip(inputs, batch):
            variable.d = array
        # the forward pass updates the batch-norm running statistics: keep them to undo a NaN batch
        running = {k: v.d.copy() for k, v in self.running_stats.items()}
        loss.forward(clear_no_need_grad=True)
        if self.comm is not None:
            self.comm.all_reduce([loss.data], division=True, inplace=False)
        value = float(loss.d)
        if not math.isfinite(value):
            self._restore_running(running)
            raise NonFiniteLoss(f"training loss is {value}")
        self.solver.zero_grad()
        loss.backward(clear_buffer=True)
        if self.comm is not None:
            self.comm.all_reduce([p.grad for p in self.params.values()], division=True, inplace=False)
        if self.solver.check_inf_or_nan_grad():
            self._restore_running(running)
            raise NonFiniteLoss("a gradient is NaN or infinite")
        if self.weight_decay:
            self.solver.weight_decay(self.weight_decay)  # L2 on the gradient: torch Adam's weight_decay
        self.solver.update()
        return value

    def _restore_running(self, running):
        for k, value in running.items():
            self.running_stats[k].d = value

    def save_solver(self, path):
        with atomic_path(path) as tmp:
            self.solver.save_states(str(tmp))

    def load_solver(self, path):
        """Read a file of `save_solver` (``Solver.save_states`` layout: ``<param>/<state>``, ``<param>/t``).

        Read by exact name with h5py: NNabla 1.39's ``load_states`` mixes up parameters whose name
        is a prefix of another's (``lstm/lstm/weight`` got the moments of ``lstm/lstm/weight_l0``).
        """
        states = self.solver.get_states()
        try:
            with h5py.File(path, "r") as f:
                for name, state in states.items():
                    if f"{name}/hh" not in f and "hh" in state.pstate:
                        state.pstate = {k: v for k, v in state.pstate.items() if not k.endswith("hh")}
                    for key, var in state.pstate.items():
                        value = f[f"{name}/{key}"][()]
                        if value.shape != var.shape:
                            raise ValueError(f"{name}/{key} has shape {value.shape}, expected {var.shape}")
                        var.d = value
                    state.t = int(f[f"{name}/t"][()])
        except (OSError, KeyError, ValueError) as exc:
            raise UnmixError(f"cannot read the solver state {path}: {exc}") from None
        self.solver.set_states(states)
        for name in states:
            if self.fast and name.endswith(LSTM_BIAS) and "hh" not in states[name].pstate:
                self.solver.split_twin(name)  # a state of NNabla's Adam: equal halves


def _twin(lstm_bias_hh, name):
    """The known ``b_hh`` half of the LSTM bias `name` (see `Trainer`), or None."""
    if isinstance(lstm_bias_hh, dict):
        return lstm_bias_hh.get(name)
    return lstm_bias_hh if name == LSTM_BIAS else None
