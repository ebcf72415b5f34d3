"""`unmix export`: a model folder's networks as ONNX graphs, for ``--model`` and other runtimes."""
import os
from pathlib import Path

from unmix.errors import UnmixError
from unmix.models import architectures
from unmix.models.model_folder import check_replaceable, read_separator_json
from unmix.models.onnx_graph import check_unmix_graph


def export(model_folder, out_folder_or_file, targets=None, force=False, streaming=False):
    """Write an ONNX model folder: the graphs of the model plus its ``separator.json``.

    The folder is a model folder that ``--model`` and `unmix.load_separator` take (no ``.h5``
    and no NNabla needed), and what other ONNX runtimes read: each graph maps a mixture
    magnitude ``mix`` ``(nb_samples, nb_channels, nb_bins, nb_frames)`` to the target's ``target``
    of the same shape (see `unmix.models.onnx_graph.build_onnx`); separator.json gives the STFT
    that makes ``mix``. Open-Unmix writes ``<target>.onnx`` per target, X-UMX one ``xumx.onnx``.

    Args:
        model_folder: an unmix model folder (separator.json + ``<target>.h5``).
        out_folder_or_file: a folder (written atomically), or a ``.onnx`` file when exporting
            exactly one target (or an X-UMX model, whose one graph holds every source).
        targets: target names (default: all of the folder; an X-UMX model is exported whole).
        streaming: also write each target's step graph (LSTM state in and out: `unmix.models.onnx_step`)
            for frame-by-frame runtimes; a folder only, causal Open-Unmix models only.
        force: replace an existing folder or file, if unmix wrote it (a model folder of known
            files only, or an ONNX graph of unmix's); anything else is refused.

    Returns:
        list of the written ``.onnx`` paths.
    """
    meta = read_separator_json(model_folder)
    out = Path(out_folder_or_file)
    if streaming and out.suffix == ".onnx":
        raise UnmixError("--streaming writes a folder (graphs and separator.json), not a .onnx file")
    check_export_out(model_folder, out, force, list(targets or meta["targets"]))
    arch = architectures.of_folder(meta)
    if streaming:
        return arch.export_streaming(model_folder, meta, out, targets, force)
    return arch.export(model_folder, meta, out, targets, force)


def check_export_out(model_folder, out, force, targets):
    """Before any work: an existing `out` needs `force`, and may only be what unmix writes (a
    model folder of known files, `check_replaceable`, or an ONNX graph written by unmix)."""
    if not os.path.lexists(out):
        return
    if not force:
        raise UnmixError(f"{out} exists; use --force to replace it")
    if out.resolve() == Path(model_folder).resolve():
        raise UnmixError(f"{out} is the model folder to export; write the export elsewhere")
    if out.suffix == ".onnx" and not out.is_dir():
        check_unmix_graph(out)
    else:
        check_replaceable(out, targets)
