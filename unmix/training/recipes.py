"""Training's side of each architecture (`unmix.models.architectures`): its recipe.

A recipe says what a training of the architecture checks, names, builds and measures: the
options it supports, the files it writes, its network (new, resumed or fine-tuned), the view of
the dataset its batches come from, the extra keywords of its loss, its validation and its
defaults. The loop (`unmix.training.train`) asks the recipe of ``--architecture`` and never
branches on the architecture itself.

The NNabla graphs are imported where a network is made: this module, like the rest of
`unmix.training`, is the NNabla boundary.
"""

from unmix.errors import UnmixError
from unmix.models.model_folder import UMX, XUMX, XUMX_SOURCES, read_h5_params
from unmix.models.onnx_graph import OnnxCrossNet, OnnxModel
from unmix.training import validation
from unmix.training.views import MagnitudeDataset, SourcesDataset, XumxDataset


class OpenUnmixRecipe:
    """open-unmix-pytorch 1.3's ``scripts/train.py``: one target, MSE on magnitudes."""

    name = UMX
    title = "Open-Unmix"
    default_patience = 140  # early stopping, epochs without a better validation loss

    def check_options(self, options):
        """Every option is supported (one-line errors come from the loop's own checks)."""

    def run_name(self, train_ds):
        """The name of the training's files: the target."""
        return train_ds.target

    def file_names(self, run_name):
        """The names whose files a run writes (and `--force` replaces)."""
        return [run_name]

    def sources(self, model):
        """The sources of a network of several (none here)."""
        return ()

    def new_network(self, config, seed):
        """``(network, branches)``: a new network and the branches whose input scaling holds the
        training set's statistics."""
        from unmix.models.nnabla_graph import OpenUnmix

        model = OpenUnmix(config, seed=seed)
        return model, [model]

    def resumed_network(self, config, history, path):
        """The network of the checkpoint file `path`."""
        from unmix.models.nnabla_graph import OpenUnmix

        return OpenUnmix(config, read_h5_params(path))

    def fine_tuned_network(self, folder, target):
        """The network of `target` in the model folder `folder`, to train further."""
        from unmix.models.nnabla_graph import load_target

        return load_target(folder, target)

    def loss_options(self, options, n_hop):
        """Extra keywords of the network's ``build_loss``."""
        return {}

    def train_view(self, dataset, n_fft, n_hop, nb_channels, frames_first):
        """The training samples as the trainer's batches take them: magnitudes ``(x, y)``."""
        return MagnitudeDataset(dataset, n_fft, n_hop, nb_channels, frames_first)

    def valid_view(self, dataset):
        """The validation tracks as audio ``(x, y)``."""
        return dataset

    def onnx_snapshot(self, model, nb_threads):
        """The current weights as ONNX Runtime sessions (validation runs 8x faster on the CPU)."""
        return OnnxModel(model, nb_threads=nb_threads)

    def validation_sums(self, model, run):
        """``(sum of per-track losses, number of tracks)`` over this process's validation tracks."""
        return validation.validation_sums(model, run.valid_loader, run.n_fft, run.n_hop,
                                          run.model.config.nb_channels, run.procs.progress)

    def summary(self, model):
        """What ``<target>.json`` says of the architecture besides the config."""
        return {}


class CrossNetRecipe:
    """Sony's X-UMX recipe: the four MUSDB sources in one network, the multi-domain loss."""

    name = XUMX
    title = "X-UMX"
    default_patience = 1000  # Sony's: no early stop within its 1000 epochs

    def check_options(self, options):
        """What X-UMX training supports, as one-line errors before any work."""
        o = options
        if o.dataset != "musdb":
            raise UnmixError(f"X-UMX trains on the four MUSDB sources: use --dataset musdb, not {o.dataset}")
        if o.nb_channels not in (1, 2):
            raise UnmixError(f"X-UMX trains mono or stereo models: --nb-channels 1 or 2, not {o.nb_channels}")
        if o.seq_dur is None or o.seq_dur <= 0:
            raise UnmixError("X-UMX trains on chunks: give --seq-dur > 0")

    def run_name(self, train_ds):
        """The name of the training's files (checkpoint, history, plot): "xumx"."""
        return XUMX

    def file_names(self, run_name):
        return [run_name] + list(XUMX_SOURCES)

    def sources(self, model):
        return tuple(model.sources)

    def new_network(self, config, seed):
        """Every branch starts from the mixture's statistics, as Sony's."""
        from unmix.models.nnabla_graph import CrossNet

        model = CrossNet(config, seed=seed)
        return model, list(model.nets.values())

    def resumed_network(self, config, history, path):
        from unmix.models.nnabla_graph import CrossNet

        model = CrossNet(config, sources=history["sources"])
        try:
            model.set_flat_params(read_h5_params(path))
        except UnmixError as exc:
            raise UnmixError(f"{path}: {exc}") from None
        return model

    def fine_tuned_network(self, folder, target):
        """The X-UMX network of the model folder `folder` (every source), to train further."""
        from unmix.models.nnabla_graph import load_crossnet

        return load_crossnet(folder)

    def loss_options(self, options, n_hop):
        return {"n_hop": n_hop, "mcoef": options.mcoef}

    def train_view(self, dataset, n_fft, n_hop, nb_channels, frames_first):
        """The five arrays of `XumxDataset`: magnitudes and signals of the mixture and the sources."""
        return XumxDataset(dataset, n_fft, n_hop, nb_channels=nb_channels)

    def valid_view(self, dataset):
        """The validation tracks as the mixture and its stems."""
        return SourcesDataset(dataset)

    def onnx_snapshot(self, model, nb_threads):
        return OnnxCrossNet((model.config, model.get_params(), model.sources), nb_threads=nb_threads)

    def validation_sums(self, model, run):
        o = run.options
        return validation.xumx_validation_sums(model, run.valid_loader, run.n_fft, run.n_hop,
                                               int(round(o.valid_dur * run.sample_rate)), o.mcoef,
                                               run.procs.progress)

    def summary(self, model):
        return {"architecture": XUMX, "sources": list(model.sources)}


RECIPES = {recipe.name: recipe for recipe in (OpenUnmixRecipe(), CrossNetRecipe())}


def get(name):
    """The recipe of the architecture `name`."""
    try:
        return RECIPES[name]
    except KeyError:
        raise UnmixError(f"unknown architecture {name!r}: use {' or '.join(RECIPES)}") from None
