"""unmix: Open-Unmix music source separation in NNabla.

    import unmix
    estimates = unmix.separate(audio, rate)          # dict target -> (nb_channels, nb_timesteps)
    sep = unmix.load_separator("umxhq", niter=1)     # reuse loaded models across songs
    estimates = sep.separate(audio, rate)
"""
__version__ = "0.1.0"

__all__ = ["Separator", "load_separator", "separate", "__version__"]


def __getattr__(name):
    # imported on first use, so `unmix --version` and the submodules start fast
    if name in ("Separator", "load_separator", "separate"):
        from unmix.separation import separator

        return getattr(separator, name)
    raise AttributeError(f"module 'unmix' has no attribute {name!r}")
