"""Open-Unmix in NNabla: the network of open-unmix-pytorch 1.3 ``OpenUnmix``, layer for layer.

    mix magnitude (nb_samples, nb_channels, nb_bins, nb_frames)
      -> crop to max_bin -> + input_mean -> * input_scale
      -> fc1 (no bias) -> bn1 -> tanh                       (nb_frames, nb_samples, hidden_size)
      -> LSTM (nb_layers, bidirectional: hidden_size // 2 per direction) -> concat skip
      -> fc2 (no bias) -> bn2 -> relu -> fc3 (no bias) -> bn3
      -> * output_scale + output_mean -> relu -> * mix magnitude

Each model owns its parameters in a private NNabla parameter scope (not the global one), so
four targets live side by side. Parameter names and shapes are those of `param_shapes`
(`unmix.models.model_folder`, which reads and writes model folders without NNabla);
they match Sony's NNabla UMX weights and map one-to-one onto the PyTorch state dict
(see `unmix.weights.convert`). Batch norm normalises the feature axis, as torch's BatchNorm1d.

The LSTM is written out step by step (one GEMM for the input projections of all frames,
both directions of a step in one batch_matmul): NNabla's built-in CPU LSTM is 10x slower
and ignores its `dropout` argument, which the reference applies between layers in training.
"""
from collections import OrderedDict

import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import numpy as np

from unmix.errors import UnmixError
# the NNabla-free part of a model, importable from here as before
from unmix.models.model_folder import (BN_EPS, XUMX_SOURCES, ModelConfig, check_params, init_params,  # noqa: F401
                               is_trainable, load_params, param_shapes, read_h5_params, read_separator_json,
                               save_params, write_json, write_separator_json)

LSTM_DROPOUT = 0.4  # between LSTM layers, training only (as the reference)
BN_DECAY = 0.9  # running = 0.9 running + 0.1 batch: torch's momentum 0.1


class OpenUnmix:
    """One target's Open-Unmix network.

    Args:
        config: the architecture.
        params: name -> array (see `param_shapes`); None initialises randomly with `seed`.
    """

    architecture = "umx"  # see `unmix.models.architectures`

    def __init__(self, config, params=None, seed=0, builtin_lstm=False):
        self.config = config
        # NNabla's own LSTM (cuDNN on a GPU) for inference; the step-by-step one is faster on the CPU
        self.builtin_lstm = builtin_lstm
        self._scope = OrderedDict()
        self._create_params()
        self.set_params(init_params(config, seed) if params is None else params)

    # -- parameters ---------------------------------------------------------------------
    def _create_params(self):
        with nn.parameter_scope("", self._scope):
            for name, shape in param_shapes(self.config).items():
                scope, _, leaf = name.rpartition("/")
                with nn.parameter_scope(scope) if scope else _nullscope():
                    need_grad = is_trainable(name)
                    nn.parameter.get_parameter_or_create(leaf, shape, need_grad=need_grad)

    @property
    def parameters(self):
        """name -> nn.Variable, including batch-norm running statistics."""
        with nn.parameter_scope("", self._scope):
            return nn.get_parameters(grad_only=False)

    def trainable_parameters(self):
        """name -> nn.Variable for the solver (running statistics excluded)."""
        with nn.parameter_scope("", self._scope):
            return nn.get_parameters(grad_only=True)

    def get_params(self):
        """A copy of all parameters as numpy arrays."""
        return {k: v.d.copy() for k, v in self.parameters.items()}

    def set_params(self, params):
        """Load name -> array; names and shapes must match `param_shapes` exactly."""
        variables = self.parameters
        for name, value in check_params(self.config, params).items():
            variables[name].d = value

    def nb_parameters(self):
        """Number of trainable scalars (as torch counts them)."""
        return int(sum(v.size for v in self.trainable_parameters().values()))

    # -- graph --------------------------------------------------------------------------
    def build(self, mix, training=False, dropout=LSTM_DROPOUT):
        """NNabla graph of the network: `build_encoder` -> `build_lstm` -> `build_decoder`.

        Args:
            mix: nn.Variable ``(nb_samples, nb_channels, nb_bins, nb_frames)``, mixture magnitude.
            training: batch statistics (updating the running ones) and LSTM dropout when True.
            dropout: the LSTM dropout probability between layers in training.

        Returns:
            nn.Variable ``(nb_samples, nb_channels, nb_bins, nb_frames)``, the target magnitude.
        """
        features = self.build_lstm(self.build_encoder(mix, training), training, dropout)
        return self.build_decoder(features, mix, training)

    def build_encoder(self, mix, training=False):
        """Crop, standardise, fc1 -> bn1 -> tanh: ``(nb_samples, nb_channels, nb_bins, nb_frames)``
        -> ``(nb_frames, nb_samples, hidden_size)``. Frame-wise, so it can run on windows."""
        cfg = self.config
        nb_samples, nb_channels, nb_bins, nb_frames = mix.shape
        if (nb_channels, nb_bins) != (cfg.nb_channels, cfg.nb_bins):
            raise UnmixError(
                f"model expects {cfg.nb_channels} channels x {cfg.nb_bins} bins, got {nb_channels} x {nb_bins}"
            )
        m, s = cfg.model_bins, cfg.hidden_size
        with nn.parameter_scope("", self._scope):
            x = F.slice(mix, start=(0, 0, 0, 0), stop=(nb_samples, nb_channels, m, nb_frames))
            x = F.transpose(x, (3, 0, 1, 2))  # (nb_frames, nb_samples, nb_channels, max_bin)
            x = (x + _bins_param("input_mean")) * _bins_param("input_scale")
            x = F.reshape(x, (nb_frames * nb_samples, nb_channels * m))
            with nn.parameter_scope("fc1"):
                x = PF.affine(x, s, with_bias=False)
            x = _batch_norm(x, "bn1", training)
            return F.tanh(F.reshape(x, (nb_frames, nb_samples, s)))

    def build_lstm(self, x, training=False, dropout=LSTM_DROPOUT):
        """LSTM, skip connection, fc2 -> bn2 -> relu: ``(nb_frames, nb_samples, hidden_size)`` -> same shape.
        The only stage that needs the whole sequence; fc2 is here so that what a long track
        keeps between stages is hidden_size, not 2 * hidden_size, floats per frame."""
        skip = F.concatenate(x, self.build_recurrence(x, training, dropout), axis=2)
        return self.build_fc2(skip, training)

    def build_recurrence(self, x, training=False, dropout=LSTM_DROPOUT):
        """The stacked (bi)LSTM alone: ``(nb_frames, nb_samples, hidden_size)`` -> same shape."""
        with nn.parameter_scope("", self._scope):
            return self._lstm(x, training, dropout)

    def build_fc2(self, x, training=False):
        """fc2 -> bn2 -> relu: ``(nb_frames, nb_samples, 2 * hidden_size)`` (features and LSTM
        outputs side by side) -> ``(nb_frames, nb_samples, hidden_size)``."""
        nb_frames, nb_samples, _ = x.shape
        s = self.config.hidden_size
        with nn.parameter_scope("", self._scope):
            x = F.reshape(x, (nb_frames * nb_samples, 2 * s))
            with nn.parameter_scope("fc2"):
                x = PF.affine(x, s, with_bias=False)
            x = F.relu(_batch_norm(x, "bn2", training))
            return F.reshape(x, (nb_frames, nb_samples, s))

    def build_decoder(self, x, mix, training=False):
        """fc3 -> bn3 -> output scaling -> relu -> * mix.

        Args:
            x: ``(nb_frames, nb_samples, hidden_size)`` from `build_lstm`.
            mix: ``(nb_samples, nb_channels, nb_bins, nb_frames)`` mixture magnitude.

        Returns:
            ``(nb_samples, nb_channels, nb_bins, nb_frames)`` target magnitude.
        """
        return self.build_mask(x, mix.shape, training) * mix

    def build_mask(self, x, shape, training=False):
        """fc3 -> bn3 -> output scaling -> relu: the mask that `build_decoder` applies to the
        mixture, ``shape`` = ``(nb_samples, nb_channels, nb_bins, nb_frames)``, from ``x``
        ``(nb_frames, nb_samples, hidden_size)``."""
        nb_samples, nb_channels, nb_bins, nb_frames = shape
        s = self.config.hidden_size
        with nn.parameter_scope("", self._scope):
            x = F.reshape(x, (nb_frames * nb_samples, s))
            with nn.parameter_scope("fc3"):
                x = PF.affine(x, nb_channels * nb_bins, with_bias=False)
            x = _batch_norm(x, "bn3", training)
            x = F.reshape(x, (nb_frames, nb_samples, nb_channels, nb_bins))
            x = x * _bins_param("output_scale") + _bins_param("output_mean")
            return F.relu(F.transpose(x, (1, 2, 3, 0)))

    def build_loss(self, mix, target, fast=False, dropout=LSTM_DROPOUT):
        """Training graph: the MSE between the network's estimate and `target` (batch statistics,
        running statistics updated, LSTM dropout between layers).

        Args:
            mix, target: nn.Variable ``(nb_samples, nb_channels, nb_bins, nb_frames)`` magnitudes;
                with `fast`, frames first: ``(nb_samples, nb_channels, nb_frames, nb_bins)``.
            fast: build it from the coarse CPU functions of `unmix.models.fast_ops` (numpy GEMMs, numba LSTM)
                instead of the stock NNabla functions; the same math, 8x faster on the CPU.
            dropout: the LSTM dropout probability between layers.

        Returns:
            nn.Variable ``()``, the loss.
        """
        if not fast:
            return F.mean(F.squared_error(self.build(mix, training=True, dropout=dropout), target))
        from unmix.models import fast_ops

        x = self._fast_encoder(mix)  # (T*N, s)
        features = self._fast_recurrence(F.reshape(x, (-1, mix.shape[0], x.shape[1])), dropout)
        x = self._fast_decoder(F.concatenate(x, features, axis=1))
        with nn.parameter_scope("", self._scope):
            return fast_ops.mask_mse(x, _param("output_scale"), _param("output_mean"), mix, target)

    # -- the fast CPU training graph, in pieces (see `build_loss`; CrossNet joins them) --------
    def _fast_encoder(self, mix):
        """Frames-first mixture magnitude ``(N, C, T, bins)`` -> tanh(bn1(fc1(x_s))) ``(T * N, s)``."""
        from unmix.models import fast_ops

        cfg = self.config
        _, nb_channels, _, nb_bins = mix.shape
        if (nb_channels, nb_bins) != (cfg.nb_channels, cfg.nb_bins):
            raise UnmixError(f"model expects {cfg.nb_channels} channels x {cfg.nb_bins} bins (frames first), "
                             f"got {nb_channels} x {nb_bins}")
        with nn.parameter_scope("", self._scope):
            x = fast_ops.scaled_affine(mix, _param("input_mean"), _param("input_scale"), _param("fc1/affine/W"),
                                  cfg.model_bins)
            return F.tanh(_fast_batch_norm(fast_ops, x, "bn1"))

    def _fast_recurrence(self, x, dropout):
        """The stacked LSTM layers (dropout between them): ``(T, N, s)`` -> ``(T * N, s)``."""
        from unmix.models import fast_ops

        cfg = self.config
        nb_frames, nb_samples, s = x.shape
        with nn.parameter_scope("", self._scope):
            with nn.parameter_scope("lstm/lstm"):
                w0, bias = _param("weight_l0"), _param("bias")
                w_rest = _param("weight") if cfg.nb_layers > 1 else None
            h = x
            for layer in range(cfg.nb_layers):
                if layer > 0 and dropout:
                    h = F.dropout(h, dropout)
                h = fast_ops.lstm_layer(h, w0 if layer == 0 else _index(w_rest, layer - 1), _index(bias, layer))
        return F.reshape(h, (nb_frames * nb_samples, s))

    def _fast_decoder(self, x):
        """fc2 -> bn2 -> relu -> fc3 -> bn3: ``(T * N, 2 s)`` -> ``(T * N, C * bins)``, before the output scaling."""
        from unmix.models import fast_ops

        with nn.parameter_scope("", self._scope):
            x = F.relu(_fast_batch_norm(fast_ops, fast_ops.affine(x, _param("fc2/affine/W")), "bn2"))
            return _fast_batch_norm(fast_ops, fast_ops.affine(x, _param("fc3/affine/W")), "bn3")

    def _lstm(self, x, training, dropout=LSTM_DROPOUT):
        """Stacked (bi)LSTM over ``(nb_frames, nb_samples, hidden_size)`` -> same shape."""
        cfg = self.config
        with nn.parameter_scope("lstm/lstm"):
            w0 = _param("weight_l0")
            w_rest = _param("weight") if cfg.nb_layers > 1 else None
            bias = _param("bias")
        if self.builtin_lstm and not training:
            return _builtin_lstm(x, w0, w_rest, bias, cfg)
        for layer in range(cfg.nb_layers):
            if layer > 0 and training and dropout:
                x = F.dropout(x, dropout)
            w = w0 if layer == 0 else _index(w_rest, layer - 1)
            x = _lstm_layer(x, w, _index(bias, layer), cfg.lstm_hidden_size)
        return x

    # -- inference on numpy ------------------------------------------------------------
    def __call__(self, mag):
        """Inference: ``(nb_samples, nb_channels, nb_bins, nb_frames)`` float32 -> same shape."""
        return self.decode(self.recur(self.encode(mag)), mag)

    def encode(self, mag):
        """`build_encoder` on numpy: mixture magnitude -> ``(nb_frames, nb_samples, hidden_size)``."""
        return _run(lambda v: self.build_encoder(v[0]), mag)

    def recur(self, features, workers=None):
        """`build_lstm` on numpy: -> ``(nb_frames, nb_samples, hidden_size)`` (`workers`: see `CrossNet.recur`)."""
        return _run(lambda v: self.build_lstm(v[0]), features)

    def decode(self, features, mag, target=None):
        """`build_decoder` on numpy: features of `recur` + mixture magnitude -> target magnitude
        (of the network's one target, whatever `target` says)."""
        return _run(lambda v: self.build_decoder(v[0], v[1]), features, mag)


def _run(build, *arrays):
    """Build an inference graph on fresh input Variables holding `arrays`, run it, return numpy."""
    inputs = []
    for a in arrays:
        v = nn.Variable(a.shape)
        v.d = np.ascontiguousarray(a, dtype=np.float32)
        inputs.append(v)
    with nn.auto_forward(False):
        out = build(inputs)
    out.forward(clear_buffer=True)
    return out.d.copy()


def _builtin_lstm(x, w0, w_rest, bias, cfg):
    """All layers with NNabla's F.lstm (cuDNN on a GPU); the parameters have its layout already."""
    nb_frames, nb_samples, _ = x.shape
    state = (cfg.nb_layers, cfg.nb_directions, nb_samples, cfg.lstm_hidden_size)
    h, c = F.constant(0.0, state), F.constant(0.0, state)
    y, _, _ = F.lstm(x, h, c, w0, w_rest, bias, num_layers=cfg.nb_layers,
                     bidirectional=not cfg.unidirectional, training=False)
    return y


def use_gpu():
    """Make cuDNN NNabla's default context (needs the nnabla-ext-cuda package and a GPU)."""
    try:
        nn.set_default_context(extension_context("cudnn"))
    except Exception as exc:
        raise UnmixError(f"cannot use the GPU: install nnabla-ext-cuda matching your CUDA ({exc})") from None


def extension_context(name):
    """NNabla's context `name` ('cpu', 'cuda', 'cudnn'). A missing extension raises, as before,
    but without NNabla's own ERROR log line: the caller turns it into its one-line message."""
    import logging

    from nnabla.ext_utils import get_extension_context

    logger = logging.getLogger("nnabla")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return get_extension_context(name)
    finally:
        logger.setLevel(level)


def _lstm_layer(x, w, b, hidden):
    """One LSTM layer, both directions at once.

    Args:
        x: ``(T, B, I)``; w: ``(D, 4, H, I + H)`` with gate order i, f, g, o; b: ``(D, 4, H)``.

    Returns:
        ``(T, B, D * H)``: forward outputs then backward outputs along the last axis.
    """
    nb_frames, nb_samples, nb_inputs = x.shape
    d = w.shape[0]
    w_ih = F.reshape(F.slice(w, start=(0, 0, 0, 0), stop=(d, 4, hidden, nb_inputs)), (1, d * 4 * hidden, nb_inputs))
    w_hh = F.reshape(F.slice(w, start=(0, 0, 0, nb_inputs), stop=(d, 4, hidden, nb_inputs + hidden)),
                     (d, 4 * hidden, hidden))
    # input projections of every frame in one GEMM: (1, T*B, D*4H) (batch_matmul wants 3-D)
    proj = F.batch_matmul(F.reshape(x, (1, nb_frames * nb_samples, nb_inputs)), w_ih, transpose_b=True)
    proj = F.reshape(proj, (nb_frames, nb_samples, d, 4 * hidden)) + F.reshape(b, (1, 1, d, 4 * hidden))
    proj = F.transpose(proj, (0, 2, 1, 3))  # (T, D, B, 4H)
    if d == 2:  # the backward direction reads the frames in reverse
        fwd = F.slice(proj, start=(0, 0, 0, 0), stop=(nb_frames, 1, nb_samples, 4 * hidden))
        bwd = F.slice(proj, start=(0, 1, 0, 0), stop=(nb_frames, 2, nb_samples, 4 * hidden))
        proj = F.concatenate(fwd, F.flip(bwd, axes=[0]), axis=1)
    steps = F.split(proj, axis=0) if nb_frames > 1 else [F.reshape(proj, proj.shape[1:])]

    h = F.constant(0.0, (d, nb_samples, hidden))
    c = F.constant(0.0, (d, nb_samples, hidden))
    outputs = []
    for gates_in in steps:
        gates = gates_in + F.batch_matmul(h, w_hh, transpose_b=True)  # (D, B, 4H)
        i, f, g, o = F.split(F.reshape(gates, (d, nb_samples, 4, hidden)), axis=2)
        c = F.sigmoid(f) * c + F.sigmoid(i) * F.tanh(g)
        h = F.sigmoid(o) * F.tanh(c)
        outputs.append(h)
    out = F.stack(*outputs, axis=0) if nb_frames > 1 else F.reshape(outputs[0], (1, d, nb_samples, hidden))
    if d == 2:
        fwd = F.slice(out, start=(0, 0, 0, 0), stop=(nb_frames, 1, nb_samples, hidden))
        bwd = F.flip(F.slice(out, start=(0, 1, 0, 0), stop=(nb_frames, 2, nb_samples, hidden)), axes=[0])
        out = F.concatenate(fwd, bwd, axis=3)  # (T, 1, B, 2H)
    return F.reshape(out, (nb_frames, nb_samples, d * hidden))


def _param(name):
    """The existing parameter `name` of the current scope."""
    return nn.parameter.get_parameter(name)


def _bins_param(name):
    """A per-bin parameter ``(nb_bins,)`` shaped ``(1, 1, 1, nb_bins)`` (NNabla broadcasts equal ranks only)."""
    p = _param(name)
    return F.reshape(p, (1, 1, 1) + p.shape)


def _index(var, i):
    """``var[i]`` of an nn.Variable, dropping the first axis."""
    start = (i,) + (0,) * (var.ndim - 1)
    stop = (i + 1,) + var.shape[1:]
    return F.reshape(F.slice(var, start=start, stop=stop), var.shape[1:])


def _batch_norm(x, name, training):
    """Batch norm over the feature axis 1 of ``(N, features)`` (torch's BatchNorm1d)."""
    with nn.parameter_scope(name):
        return PF.batch_normalization(x, axes=[1], decay_rate=BN_DECAY, eps=BN_EPS, batch_stat=training)


def _fast_batch_norm(fast_ops, x, name):
    """`unmix.models.fast_ops.batch_norm` on the parameters that `_batch_norm` creates under `name`."""
    with nn.parameter_scope(f"{name}/bn"):
        stats = [_param(k) for k in ("beta", "gamma", "mean", "var")]
    return fast_ops.batch_norm(x, *stats, decay_rate=BN_DECAY, eps=BN_EPS)


class _nullscope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# -- model folders ------------------------------------------------------------------------
def save_target(folder, target, model, extra_json=None):
    """Write ``<folder>/<target>.h5`` (NNabla parameters) and, if given, ``<target>.json``."""
    save_params(folder, target, model.config, model.get_params(), extra_json)


def load_target(folder, target, builtin_lstm=False):
    """Load one target's model from a model folder (see `unmix.models.model_folder`)."""
    config, params = load_params(folder, target)
    return OpenUnmix(config, params, builtin_lstm=builtin_lstm)


def load_crossnet(folder, builtin_lstm=False):
    """Load the X-UMX network of an "xumx" model folder (every source, see `unmix.models.model_folder`)."""
    sources = read_separator_json(folder)["targets"]
    loaded = {s: load_params(folder, s) for s in sources}
    config = loaded[sources[0]][0]
    return CrossNet(config, {s: p for s, (_, p) in loaded.items()}, sources, builtin_lstm=builtin_lstm)


# -- X-UMX --------------------------------------------------------------------------------
class CrossNet:
    """CrossNet-Open-Unmix (X-UMX, Sawata et al. 2021): one network for several sources.

    Each source s has an Open-Unmix branch (its own `OpenUnmix` parameters and scope), and
    the branches meet twice, each time in a frame-wise mean over the sources:

        mix -> per source: crop, standardise, fc1 -> bn1 -> tanh = h1_s   (`OpenUnmix.build_encoder`)
        bridge 1: c1 = mean_s h1_s                                  (nb_frames, nb_samples, hidden_size)
        per source: l_s = LSTM_s(c1)                                (`OpenUnmix.build_recurrence`)
        bridge 2: c2 = mean_s [h1_s, l_s] = [c1, mean_s l_s]        (nb_frames, nb_samples, 2 * hidden_size)
        per source: fc2 -> bn2 -> relu (`OpenUnmix.build_fc2`), fc3 -> bn3 -> output scaling
            -> relu -> * mix (`OpenUnmix.build_decoder`)

    as Sony's ``OpenUnmix_CrossNet`` (x-umx/model.py) and asteroid's ``XUMX`` compute it. The
    bridges are frame-wise, so the three stages `build_encoder` (-> c1), `build_lstm` (-> c2)
    and `build_decoder` (one source) split a long track as Open-Unmix's do.

    Args:
        config: the `ModelConfig` of every branch.
        params: source -> name -> array (`param_shapes`); None initialises randomly.
        sources: the source names, in the model's order.
    """

    architecture = "xumx"

    def __init__(self, config, params=None, sources=XUMX_SOURCES, seed=0, builtin_lstm=False):
        self.config = config
        self.sources = list(sources)
        self.nets = {s: OpenUnmix(config, None if params is None else params[s], seed=seed + i,
                                  builtin_lstm=builtin_lstm) for i, s in enumerate(self.sources)}

    @property
    def targets(self):
        """The names of the estimates (the sources)."""
        return list(self.sources)

    def get_params(self):
        """source -> name -> numpy array."""
        return {s: net.get_params() for s, net in self.nets.items()}

    def nb_parameters(self):
        return sum(net.nb_parameters() for net in self.nets.values())

    @property
    def parameters(self):
        """``<source>/<name>`` -> nn.Variable, every branch's (running statistics included): the
        names of a training checkpoint."""
        return {f"{s}/{k}": v for s, net in self.nets.items() for k, v in net.parameters.items()}

    def trainable_parameters(self):
        """``<source>/<name>`` -> nn.Variable for the solver (running statistics excluded)."""
        return {f"{s}/{k}": v for s, net in self.nets.items() for k, v in net.trainable_parameters().items()}

    def set_flat_params(self, params):
        """Load the ``<source>/<name>`` -> array of a checkpoint (every name of `parameters`)."""
        expected = set(self.parameters)
        if set(params) != expected:
            missing, extra = sorted(expected - set(params)), sorted(set(params) - expected)
            raise UnmixError(f"X-UMX parameters do not match: missing {missing[:3]}, unexpected {extra[:3]}")
        for s, net in self.nets.items():
            net.set_params({k[len(s) + 1:]: v for k, v in params.items() if k.startswith(f"{s}/")})

    def build_loss(self, mix, real, imag, target_mag, target_time, fast=True, dropout=LSTM_DROPOUT, n_hop=1024,
                   mcoef=None):
        """Training graph of X-UMX's multi-domain loss (`unmix.models.losses`): ``L_f + mcoef L_t`` of
        the masks: the fast network and `unmix.models.fast_ops.XumxLoss` on the CPU, or the stock
        graph (`_stock_loss`) that a GPU runs.

        Args:
            mix, real, imag: nn.Variable ``(N, C, T, bins)`` (frames first): the mixture's
                magnitude and STFT (center=True).
            target_mag: ``(N, S, C, T, bins)`` the sources' magnitudes.
            target_time: ``(N, S, C, (T - 1) * n_hop)`` the sources' signals.
            fast: the coarse CPU function `unmix.models.fast_ops.XumxLoss` (and the fast network);
                False: the stock NNabla graph (`_stock_loss`), what a GPU (cuDNN) runs.
            mcoef: the weight of the time-domain loss (None: `unmix.models.losses.MCOEF`).

        Returns:
            nn.Variable ``()``, the loss.
        """
        from unmix.models import losses
        from unmix.models import fast_ops

        mcoef = losses.MCOEF if mcoef is None else mcoef
        if not fast:
            return self._stock_loss(mix, real, imag, target_mag, target_time, dropout, n_hop, mcoef)
        nb_samples, nb_channels, nb_frames, nb_bins = mix.shape
        n_fft = 2 * (nb_bins - 1)
        features = [net._fast_encoder(mix) for net in self.nets.values()]  # (T*N, s) each
        c1 = _mean(features)
        c1_frames = F.reshape(c1, (nb_frames, nb_samples, c1.shape[1]))
        c2 = F.concatenate(c1, _mean([net._fast_recurrence(c1_frames, dropout) for net in self.nets.values()]),
                           axis=1)
        decoded = []
        for net in self.nets.values():
            with nn.parameter_scope("", net._scope):
                decoded.append((net._fast_decoder(c2), _param("output_scale"), _param("output_mean")))
        return fast_ops.xumx_loss_of(mix, real, imag, target_mag, target_time, decoded, n_fft, n_hop, mcoef)

    def _stock_loss(self, mix, real, imag, target_mag, target_time, dropout, n_hop, mcoef):
        """`build_loss` from stock NNabla functions (cuDNN on a GPU): the network of `build`, the
        14 combinations' MSE (Sony's ``mse_loss``), ``F.istft`` of the masked mixture (NNabla's
        center=True ISTFT divides by the window envelope, as torch.istft: tests/test_xumx_loss.py)
        and the weighted SDR (Sony's ``sdr_loss``). Same inputs, frames first."""
        nb_samples, nb_channels, nb_frames, nb_bins = mix.shape
        nb_sources, length = len(self.sources), target_time.shape[-1]
        mag = F.transpose(mix, (0, 1, 3, 2))  # the network's layout
        bridged = self.build_lstm(self.build_encoder(mag, True), True, dropout)
        masks = []
        for source in self.sources:
            net = self.nets[source]
            masks.append(F.transpose(net.build_mask(net.build_fc2(bridged, True), mag.shape, True), (0, 1, 3, 2)))
        targets = [_index(F.transpose(target_mag, (1, 0, 2, 3, 4)), s) for s in range(nb_sources)]
        loss_f = stock_combination_mse([m * mix for m in masks], targets)
        # every source's estimate in one ISTFT: (S * N * C, bins, T) -> (S * N * C, L)
        stacked = F.transpose(F.stack(*masks, axis=0), (0, 1, 2, 4, 3))  # (S, N, C, bins, T)
        shape = (nb_sources * nb_samples * nb_channels, nb_bins, nb_frames)
        spectra = [F.reshape(stacked * F.reshape(F.transpose(part, (0, 1, 3, 2)), (1,) + mag.shape), shape)
                   for part in (real, imag)]
        n_fft = 2 * (nb_bins - 1)
        est = F.istft(*spectra, n_fft, n_hop, n_fft, window_type="hanning", center=True, pad_mode="constant")
        est = F.reshape(est, (nb_sources, nb_samples * nb_channels, length))
        signals = F.reshape(F.transpose(target_time, (1, 0, 2, 3)), (nb_sources, nb_samples * nb_channels, length))
        loss_t = stock_combination_sdr([_index(est, s) for s in range(nb_sources)],
                                       [_index(signals, s) for s in range(nb_sources)])
        return loss_f + mcoef * loss_t

    # -- graph --------------------------------------------------------------------------
    def build(self, mix, training=False, dropout=LSTM_DROPOUT):
        """The whole network: ``(nb_samples, nb_channels, nb_bins, nb_frames)`` mixture magnitude
        -> source -> magnitude of the same shape."""
        bridged = self.build_lstm(self.build_encoder(mix, training), training, dropout)
        return {s: self.build_decoder(bridged, mix, s, training) for s in self.sources}

    def build_encoder(self, mix, training=False):
        """Every source's encoder, then bridge 1: -> c1 ``(nb_frames, nb_samples, hidden_size)``."""
        return _mean([net.build_encoder(mix, training) for net in self.nets.values()])

    def build_lstm(self, c1, training=False, dropout=LSTM_DROPOUT):
        """Every source's LSTM on c1, then bridge 2: -> c2 ``(nb_frames, nb_samples, 2 * hidden_size)``."""
        lstm = _mean([net.build_recurrence(c1, training, dropout) for net in self.nets.values()])
        return F.concatenate(c1, lstm, axis=2)

    def build_decoder(self, c2, mix, source, training=False):
        """One source's decoder: c2 and the mixture magnitude -> its magnitude ``(nb_samples,
        nb_channels, nb_bins, nb_frames)``."""
        net = self.nets[source]
        return net.build_decoder(net.build_fc2(c2, training), mix, training)

    # -- inference on numpy ------------------------------------------------------------
    def __call__(self, mag):
        """Inference: ``(nb_samples, nb_channels, nb_bins, nb_frames)`` float32 -> source -> same shape."""
        bridged = self.recur(self.encode(mag))
        return {s: self.decode(bridged, mag, s) for s in self.sources}

    def encode(self, mag):
        """`build_encoder` on numpy: mixture magnitude -> c1."""
        return _run(lambda v: self.build_encoder(v[0]), mag)

    def recur(self, c1, workers=None):
        """`build_lstm` on numpy: c1 -> c2 (`workers`, the side-by-side LSTMs that the ONNX
        runtime may run, means nothing to NNabla's one-threaded CPU backend)."""
        return _run(lambda v: self.build_lstm(v[0]), c1)

    def decode(self, c2, mag, source):
        """`build_decoder` on numpy: c2 + mixture magnitude -> the magnitude of `source`."""
        return _run(lambda v: self.build_decoder(v[0], v[1], source), c2, mag)


def _sum(variables):
    total = variables[0]
    for v in variables[1:]:
        total = total + v
    return total


def stock_combination_mse(estimates, targets):
    """X-UMX's L_f (`unmix.models.losses`) from stock functions: the mean over the combinations of
    1 to S - 1 sources of ``mean((sum estimates - sum targets)^2)``, as Sony's ``mse_loss``."""
    from unmix.models.losses import combinations

    combos = combinations(len(estimates))
    terms = [F.mean(F.squared_error(_sum([estimates[i] for i in c]), _sum([targets[i] for i in c]))) for c in combos]
    return _sum(terms) * (1.0 / len(combos))


def stock_combination_sdr(estimates, targets, eps=1e-10):
    """X-UMX's L_t from stock functions, as Sony's ``sdr_loss`` / ``sdr_loss_core``: ``1 +`` the
    mean over the combinations and the rows of the weighted SDR; estimates and targets are S
    ``(rows, L)`` time signals, the mixture their targets' sum."""
    from unmix.models.losses import combinations

    mixture = _sum(targets)

    def total(a, b):
        return F.sum(a * b, axis=1, keepdims=True)

    terms = []
    for c in combinations(len(estimates)):
        est, ref = _sum([estimates[i] for i in c]), _sum([targets[i] for i in c])
        noise, noise_hat = mixture - ref, mixture - est
        alpha = total(ref, ref) / (total(ref, ref) + total(noise, noise) + eps)
        cos_target = total(est, ref) / ((eps + total(est, est)) ** 0.5 * (eps + total(ref, ref)) ** 0.5 + eps)
        cos_noise = total(noise, noise_hat) / ((eps + total(noise_hat, noise_hat)) ** 0.5
                                               * (eps + total(noise, noise)) ** 0.5 + eps)
        terms.append(-alpha * cos_target - (1.0 - alpha) * cos_noise)
    return 1.0 + F.mean(F.concatenate(*terms, axis=0))


def _mean(variables):
    """The element-wise mean of same-shaped Variables (X-UMX's bridges), as a sum over their count."""
    total = variables[0]
    for v in variables[1:]:
        total = total + v
    return total * (1.0 / len(variables)) if len(variables) > 1 else total
