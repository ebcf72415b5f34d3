"""unmix: Open-Unmix music source separation in NNabla.

Public API (filled in by the separation stage):
    separate(audio, rate, model=..., ...) -> dict[str, np.ndarray]
    Separator, load_separator
"""
__version__ = "0.1.0"
