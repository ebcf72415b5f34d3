"""Seeded random generators: one independent stream per (song seed, concern)."""
import zlib

import numpy as np


def child(seed, name):
    """Generator for one concern of one song.

    seed: the song's integer seed; name: the concern ("plan", "drums", "vocals", ...).
    The stream depends only on (seed, name), so adding a random draw in one module does not
    change what the other modules draw for the same song.
    """
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])
