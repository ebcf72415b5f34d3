"""Scales, chord progressions and voicings (pitches are MIDI numbers, pitch classes 0-11)."""

MAJOR = [0, 2, 4, 5, 7, 9, 11]
MINOR = [0, 2, 3, 5, 7, 8, 10]
DORIAN = [0, 2, 3, 5, 7, 9, 10]
MIXOLYDIAN = [0, 2, 4, 5, 7, 9, 10]
SCALES = {"major": MAJOR, "minor": MINOR, "dorian": DORIAN, "mixolydian": MIXOLYDIAN}

# progressions as scale degrees (0 = I/i); one entry per chord slot
PROGRESSIONS = {
    "major": [[0, 4, 5, 3], [0, 5, 3, 4], [5, 3, 0, 4], [0, 3, 4, 4], [0, 3, 5, 4], [3, 4, 0, 5],
              [0, 4, 5, 2, 3, 0, 3, 4], [0, 0, 3, 4], [1, 4, 0, 0], [0, 3, 0, 4], [0, 5, 1, 4]],
    "minor": [[0, 5, 2, 6], [0, 3, 4, 0], [0, 6, 5, 6], [0, 5, 3, 4], [0, 3, 6, 2], [5, 6, 0, 0],
              [0, 0, 3, 3], [0, 6, 5, 4]],
    "dorian": [[0, 3, 0, 3], [0, 6, 3, 0], [0, 1, 0, 3]],
    "mixolydian": [[0, 6, 3, 0], [0, 3, 6, 3], [0, 0, 6, 3]],
    "blues": [[0, 0, 0, 0, 3, 3, 0, 0, 4, 3, 0, 4]],
}


def chord_pcs(scale, degree, seventh=False):
    """Chord tones as semitones above the key root (root position, may exceed 12)."""
    idx = [0, 2, 4, 6] if seventh else [0, 2, 4]
    return [scale[(degree + i) % 7] + 12 * ((degree + i) // 7) for i in idx]


def nearest_pitch(pc, center):
    """MIDI pitch with pitch class pc closest to center."""
    base = center - ((center - pc) % 12)
    return base if center - base <= 6 else base + 12


def voicing(pcs_abs, center, n=4):
    """Close voicing of n chord tones around center (sorted MIDI pitches)."""
    notes = sorted({nearest_pitch(p % 12, center + o) for p in pcs_abs for o in (-4, 0, 4)})
    return sorted(sorted(notes, key=lambda x: abs(x - center))[:n])


def scale_pitches(key, scale, lo, hi):
    """All MIDI pitches in [lo, hi] that belong to the scale on key."""
    pcs = {(key + s) % 12 for s in scale}
    return [p for p in range(lo, hi + 1) if p % 12 in pcs]
