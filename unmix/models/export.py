"""`unmix export`: a model folder's networks as ONNX graphs, for ``--model`` and other runtimes."""
from pathlib import Path

from unmix.models import architectures
from unmix.models.model_folder import read_separator_json


def export(model_folder, out_folder_or_file, targets=None, force=False):
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
        force: replace an existing folder or file.

    Returns:
        list of the written ``.onnx`` paths.
    """
    meta = read_separator_json(model_folder)
    out = Path(out_folder_or_file)
    architectures.check_export_out(model_folder, out, force)
    return architectures.of_folder(meta).export(model_folder, meta, out, targets)
