"""Open-Unmix (UMX), the architecture: one network per target (see `unmix.models.architectures`).

A model folder holds ``<target>.h5`` per target (or ``<target>.onnx`` once exported); each
target's network runs on its own, so a separator may load any subset of the targets.
"""
from pathlib import Path

from unmix.errors import UnmixError
from unmix.models import onnx_graph, onnx_step
from unmix.models.model_folder import UMX, add_target, load_params, save_params, target_config


class OpenUnmixArchitecture:
    """Open-Unmix: the networks, the export and the saving of a model of independent targets."""

    name = UMX
    steps_frame_by_frame = True  # a causal (unidirectional) network steps frame by frame: `unmix.models.onnx_step`
    loss_label = "MSE on magnitudes"  # what its training minimises (the loss plots' axis)

    def networks(self, folder, meta, targets, backend="onnx", gpu=False, nb_threads=1):
        """target -> its network, for `targets` of the model folder `folder`.

        The Separator runs the targets side by side, one per thread: a target's ONNX Runtime
        session gets threads of its own only when there are fewer targets than threads.
        """
        session_threads = max(1, nb_threads // len(targets))
        return {t: _load_network(folder, t, backend, gpu, session_threads) for t in targets}

    def weight_names(self, target, network):
        """The names of the ``.h5`` files a trained network of `target` is saved as."""
        return [target]

    def write_weights(self, folder, target, network):
        """Save the trained `network` (`unmix.models.nnabla_graph.OpenUnmix`) as ``<target>.h5``."""
        save_params(folder, target, network.config, network.get_params())

    def write_description(self, folder, target, network, sample_rate, n_fft, n_hop):
        """Add `target` to the folder's separator.json (the other targets stay)."""
        add_target(folder, target, network.config, sample_rate, n_fft, n_hop)

    def export(self, folder, meta, out, targets=None, force=False):
        """Write ``<target>.onnx`` per target and separator.json into the folder `out`, or the
        one target's graph as the file `out` (``.onnx``); see `unmix.models.export`."""
        targets = list(targets or meta["targets"])
        if out.suffix == ".onnx" and len(targets) != 1:
            raise UnmixError(f"{out} is a single file but {len(targets)} targets are to be exported: "
                             "give a folder or one target")
        params = {t: load_params(folder, t) for t in targets}  # all errors before any write
        if out.suffix == ".onnx":
            onnx_graph.save_graph(onnx_graph.build_onnx(*params[targets[0]]), out, replace=force)
            return [out]
        # the folder describes itself: only the exported targets
        exported = {**meta, "targets": targets, "models": {t: meta["models"][t] for t in targets}, "format": "onnx"}
        onnx_graph.write_export(out, {f"{t}.onnx": onnx_graph.build_onnx(*params[t]) for t in targets}, exported,
                                force)
        return [out / f"{t}.onnx" for t in targets]


    def export_streaming(self, folder, meta, out, targets=None, force=False):
        """Write per target its whole-track graph and its step graph (LSTM state in and out) for
        frame-by-frame runtimes; see `unmix.models.onnx_step.export_streaming`."""
        return onnx_step.export_streaming(folder, meta, out, targets, force)


def _load_network(folder, target, backend, gpu, nb_threads):
    """One target's network: the NNabla one, or ONNX Runtime sessions built from the ``.h5``
    parameters or read from the ``.onnx`` graph of an exported folder (`unmix export`)."""
    if backend == "nnabla":
        from unmix.models.nnabla_graph import load_target  # the NNabla runtime: imported only when asked for

        return load_target(folder, target, builtin_lstm=gpu)
    graph = Path(folder) / f"{target}.onnx"
    if graph.is_file() and not (Path(folder) / f"{target}.h5").is_file():
        net = onnx_graph.OnnxModel(graph, nb_threads=nb_threads)
        if net.config != target_config(folder, target):
            raise UnmixError(f"{graph} is not the model that {Path(folder) / 'separator.json'} describes")
        return net
    return onnx_graph.OnnxModel(load_params(folder, target), nb_threads=nb_threads)


OPEN_UNMIX = OpenUnmixArchitecture()
