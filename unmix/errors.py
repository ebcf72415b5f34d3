"""Errors a user can cause.

`UnmixError` carries a one-line message that the CLI prints as ``error: ...``
before exiting non-zero; anything else is a bug and keeps its traceback.
"""
import sys


class UnmixError(Exception):
    """A problem with the user's input, files or environment (one-line message)."""


NNABLA_PYTHONS = ((3, 8), (3, 9), (3, 10))  # NNabla 1.39, its last release, has wheels for these only


def require_nnabla(feature):
    """Raise a one-line UnmixError saying how to get NNabla when it cannot be imported.

    Separating, converting, exporting and evaluating need no NNabla; `feature` (training, the
    NNabla backend, the GPU) does, and NNabla exists for Python 3.8-3.10 only.
    """
    try:
        import nnabla  # noqa: F401
    except ImportError as exc:
        version = "%d.%d" % sys.version_info[:2]
        if sys.version_info[:2] in NNABLA_PYTHONS:
            raise UnmixError(f"{feature} needs NNabla, which does not import here ({exc}): "
                             "install it with `pip install 'unmix[train]'`") from None
        raise UnmixError(f"{feature} needs NNabla, which runs on Python 3.8-3.10 only (this is Python {version}): "
                         "in a Python 3.10 environment (e.g. `pyenv install 3.10`), `pip install 'unmix[train]'`"
                         ) from None
