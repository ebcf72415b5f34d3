"""msynth: synthetic MUSDB18-HQ-style multitrack songs (the project's copy of the shared generator).

One module per concern:
    rng       seeded child generators (one per concern, so a change in one module does not
              reshuffle every other random choice of a song)
    assets    soundfonts, Hydrogen drumkits and espeak-ng voices found on the machine
    theory    scales, chord progressions, voicings
    genres    the genre table (tempo, drum styles, instruments, vocal style, mix character)
    plan      key, tempo, chords, song sections and which part plays in which bar
    drums     drum patterns -> hits; hydrogen: the Hydrogen drumkit sampler
    parts     bass and "other" parts (comping, pads, leads, arpeggios) as MIDI
    fluid     FluidSynth rendering of MIDI parts
    singer    the WORLD-vocoder singer (espeak-ng syllables sung on a melody)
    vocals    melodies, lyrics, harmonies, doubles, breaths and the vocal chain
    effects   EQ, compression, saturation, reverb, delay, panning, width, automation
    mixing    per-part chains into stems, levels, bus gain, exact int16 sum
    song      one song from a seed, written atomically in the MUSDB18-HQ layout
Nothing runs at import.
"""
