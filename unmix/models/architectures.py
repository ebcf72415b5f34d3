"""The network architectures unmix runs, as objects: the one place that knows how they differ.

An architecture turns a model folder into networks for a runtime, exports them, and saves a
trained network; the Separator, the exporter and the checkpoint code ask it instead of
branching on its name. Every network it returns answers the same three calls, whatever the
architecture and the runtime (ONNX Runtime or NNabla):

- ``encode(mag)``: mixture magnitude ``(nb_samples, nb_channels, nb_bins, nb_frames)`` ->
  features ``(nb_frames, nb_samples, hidden_size)``;
- ``recur(features, workers=None)``: the LSTM part over the whole track (`workers`: how many
  recurrences a network of several sources may run side by side);
- ``decode(features, mag, target)``: -> the magnitude of `target`, shaped like `mag`.

Open-Unmix (`unmix.models.umx`) is one network per target; X-UMX (`unmix.models.xumx`) one
network for all its sources. Training's side of an architecture (datasets, loss, validation,
defaults) is its recipe in `unmix.training.recipes`.
"""
from unmix.errors import UnmixError
from unmix.models import umx, xumx
from unmix.models.model_folder import architecture as architecture_name

ARCHITECTURES = {arch.name: arch for arch in (umx.OPEN_UNMIX, xumx.CROSSNET)}


def get(name):
    """The architecture called `name` ("umx", "xumx")."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UnmixError(f"unknown architecture '{name}' (known: {', '.join(ARCHITECTURES)})") from None


def of_folder(meta):
    """The architecture of a model folder, from its parsed separator.json."""
    return get(architecture_name(meta))


def of_network(network):
    """The architecture of an NNabla or ONNX network object (its ``architecture`` attribute)."""
    return get(network.architecture)
