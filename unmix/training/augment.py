"""Source augmentations of training chunks: ``f(audio (nb_channels, nb_timesteps), rng) -> audio``.

The reference's three (open-unmix 1.3 ``openunmix/data.py``): a random gain, a random channel
swap, and forcing stereo. `make_augmentations` builds the `Compose` a dataset applies to every
source chunk from names and/or callables; every random draw comes from the sample's generator.
"""
from typing import Callable, Sequence, Union

import numpy as np

from unmix.errors import UnmixError
from unmix.training.chunks import fit_channels_dropping_extra

Augmentation = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def augment_gain(audio: np.ndarray, rng: np.random.Generator,
                 low: float = 0.25, high: float = 1.25) -> np.ndarray:
    """Scale by one random gain, uniform in [low, high)."""
    return audio * np.float32(rng.uniform(low, high))


def augment_channelswap(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Swap the two channels of a stereo signal with probability 0.5."""
    # draws only for stereo, as the reference does
    if audio.shape[0] == 2 and rng.uniform() < 0.5:
        return audio[::-1].copy()
    return audio


def augment_force_stereo(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mono -> duplicated stereo; more than two channels -> the first two."""
    return fit_channels_dropping_extra(audio, 2)


AUGMENTATIONS = {
    "gain": augment_gain,
    "channelswap": augment_channelswap,
    "force_stereo": augment_force_stereo,
}


class Compose:
    """Apply augmentations in order: ``Compose([...])(audio, rng)``.

    Module-level functions only, so that it pickles for 'spawn' workers.
    """

    def __init__(self, augmentations: Sequence[Augmentation] = ()):
        self.augmentations = list(augmentations)

    def __call__(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for augment in self.augmentations:
            audio = augment(audio, rng)
        return audio

    def __repr__(self):
        return "Compose([" + ", ".join(getattr(a, "__name__", repr(a)) for a in self.augmentations) + "])"


def make_augmentations(augmentations: Union[None, Sequence, Callable]) -> Compose:
    """Build a Compose from names (``"gain"``, ``"channelswap"``, ``"force_stereo"``) and/or callables."""
    if isinstance(augmentations, Compose):
        return augmentations
    if augmentations is None:
        return Compose()
    if callable(augmentations):
        return Compose([augmentations])
    if isinstance(augmentations, str):
        augmentations = [augmentations]
    out = []
    for a in augmentations:
        if callable(a):
            out.append(a)
        elif a in AUGMENTATIONS:
            out.append(AUGMENTATIONS[a])
        else:
            raise UnmixError(f"unknown source augmentation {a!r}; known: {', '.join(AUGMENTATIONS)}")
    return Compose(out)
