"""CrossNet-Open-Unmix (X-UMX), the architecture: one network for all its sources, whose
branches meet in two bridges (see `unmix.models.architectures`).

A model folder holds ``<source>.h5`` per source (one config for all) and says ``"architecture":
"xumx"`` in its separator.json; exported, one ``xumx.onnx`` graph. Separating any target runs
every source's encoder and LSTM, since the bridges average them all.
"""
from pathlib import Path

from unmix.errors import UnmixError
from unmix.models import onnx_graph
from unmix.models.model_folder import XUMX, load_params, read_separator_json, save_params, target_config, \
    write_separator_json


class CrossNetArchitecture:
    """X-UMX: the network, the export and the saving of a model of bridged sources."""

    name = XUMX
    steps_frame_by_frame = False  # no step graphs: its bridges and LSTMs are bidirectional (it streams block-online)
    loss_label = "multi-domain loss"

    def networks(self, folder, meta, targets, backend="onnx", gpu=False, nb_threads=1):
        """target -> the one network (the same object for every target).

        Its encoder and LSTMs get every thread; its decoders run side by side, one per thread.
        """
        decoder_threads = max(1, nb_threads // len(targets))
        network = _load_crossnet(folder, targets, backend, gpu, nb_threads, decoder_threads)
        return {t: network for t in targets}

    def weight_names(self, target, network):
        return list(network.sources)

    def write_weights(self, folder, target, network):
        """Save the trained `network` (`unmix.models.nnabla_graph.CrossNet`) as ``<source>.h5`` each."""
        for source, params in network.get_params().items():
            save_params(folder, source, network.config, params)

    def write_description(self, folder, target, network, sample_rate, n_fft, n_hop):
        """separator.json of the folder's one X-UMX model."""
        write_separator_json(folder, {s: network.config for s in network.sources}, sample_rate, n_fft, n_hop,
                             architecture=XUMX)

    def export(self, folder, meta, out, targets=None, force=False):
        """One graph (`onnx_graph.build_xumx_onnx`) of every source, as the file `out` (``.onnx``)
        or as ``xumx.onnx`` in the folder `out` with its separator.json."""
        sources = meta["targets"]
        if targets and sorted(targets) != sorted(sources):
            raise UnmixError(f"an X-UMX model needs all its sources ({', '.join(sources)}) to separate any of "
                             "them: export it whole (and pick targets when separating)")
        loaded = {s: load_params(folder, s) for s in sources}  # all errors before any write
        proto = onnx_graph.build_xumx_onnx(loaded[sources[0]][0], {s: p for s, (_, p) in loaded.items()}, sources)
        if out.suffix == ".onnx":
            onnx_graph.save_graph(proto, out, replace=force)
            return [out]
        onnx_graph.write_export(out, {onnx_graph.XUMX_GRAPH: proto}, {**meta, "format": "onnx"}, force)
        return [out / onnx_graph.XUMX_GRAPH]


    def export_streaming(self, folder, meta, out, targets=None, force=False):
        raise UnmixError("an X-UMX model has no step graphs (its LSTMs are bidirectional): export it without "
                         "--streaming and stream it block-online (--chunk)")


def _load_crossnet(folder, targets, backend, gpu, nb_threads, decoder_threads):
    """The X-UMX network of an "xumx" model folder: the NNabla one, or ONNX Runtime sessions built
    from the sources' ``.h5`` parameters or read from the graph of an exported folder."""
    if backend == "nnabla":
        from unmix.models.nnabla_graph import load_crossnet  # the NNabla runtime: imported only when asked for

        return load_crossnet(folder, builtin_lstm=gpu)
    sources = read_separator_json(folder)["targets"]
    graph = Path(folder) / onnx_graph.XUMX_GRAPH
    if graph.is_file() and not any((Path(folder) / f"{s}.h5").is_file() for s in sources):
        net = onnx_graph.OnnxCrossNet(graph, targets, nb_threads=nb_threads, decoder_threads=decoder_threads)
        if net.config != target_config(folder, sources[0]) or net.sources != sources:
            raise UnmixError(f"{graph} is not the model that {Path(folder) / 'separator.json'} describes")
        return net
    loaded = {s: load_params(folder, s) for s in sources}
    config = loaded[sources[0]][0]
    return onnx_graph.OnnxCrossNet((config, {s: p for s, (_, p) in loaded.items()}, sources), targets,
                                   nb_threads=nb_threads, decoder_threads=decoder_threads)


CROSSNET = CrossNetArchitecture()
