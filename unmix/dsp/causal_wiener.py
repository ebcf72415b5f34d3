"""A causal multichannel Wiener filter: the EM of `unmix.dsp.filtering` on past frames only.

The offline filter estimates each source's spatial covariance ``R_j(f)`` from every frame of a
window, past and future. Streaming, frame ``t`` can only use frames ``<= t``: here the sums that
make ``R_j`` are kept with exponential forgetting,

    S_j(t) = lam * S_j(t - 1) + y_j(t) y_j(t)^H        (nb_channels x nb_channels, per bin)
    W_j(t) = lam * W_j(t - 1) + v_j(t)                 v_j(t) = mean over channels of |y_j(t)|^2
    R_j(t) = S_j(t) / (eps * s^2 + W_j(t))

with ``lam = 1 - 1 / wiener_win_len`` (an exponential window whose weights sum to
``wiener_win_len`` frames; 0 or None: ``lam = 1``, every past frame alike), then, as offline,

    y_j(t) <- v_j(t) R_j(t) Cxx^-1 x(t),   Cxx = sqrt(eps) * s^2 * I + sum_j v_j(t) R_j(t)

Exponential forgetting rather than a sliding window of past frames: its state is one sum per
source, channel pair and bin, whatever the window (a sliding window would keep every frame of
it), and a long stream never holds more. Each EM iteration has its own sums, fed with the
estimates that enter that iteration (iteration 1 the initial estimates, as offline).

Scale: the offline filter divides the mixture by ``s = max(1, max |x| / scale_factor)`` of its
window so that ``eps`` means the same at every level; here ``s`` is the running maximum over the
past frames, and the sums are kept unscaled (the division is folded into ``eps * s^2``, the same
arithmetic as scaling x and the estimates by s), so a later, louder frame does not invalidate them.
"""
import numpy as np

from unmix.dsp import filtering
from unmix.errors import UnmixError


def forgetting_factor(wiener_win_len):
    """``lam`` for an exponential window of `wiener_win_len` frames (0 or None: 1, no forgetting)."""
    if not wiener_win_len:
        return 1.0
    if wiener_win_len < 1:
        raise UnmixError(f"wiener_win_len must be >= 1 frame (or 0), got {wiener_win_len}")
    return 1.0 - 1.0 / float(wiener_win_len)


class CausalWiener:
    """The causal Wiener filter's state and its step, frame by frame.

    Args:
        nb_channels: channels of the mixture (1 or 2 when niter > 0).
        nb_bins: frequency bins.
        niter: EM iterations (0: the initial estimates, frame-local, no state).
        softmask, residual: as `unmix.dsp.filtering.wiener`.
        wiener_win_len: frames of the exponential window (see the module docstring).
        scale_factor, eps: as `filtering.wiener`.
    """

    def __init__(self, nb_channels, nb_bins, niter=1, softmask=False, residual=False, wiener_win_len=300,
                 scale_factor=10.0, eps=1e-10):
        if niter > 0 and nb_channels not in (1, 2):
            raise UnmixError(f"Wiener EM supports mono or stereo, got {nb_channels} channels")
        self.nb_channels, self.nb_bins, self.niter = int(nb_channels), int(nb_bins), int(niter)
        self.softmask, self.residual = bool(softmask), bool(residual)
        self.lam = np.float32(forgetting_factor(wiener_win_len))
        self.scale_factor, self.eps = float(scale_factor), float(eps)
        self.reset()

    def reset(self):
        """Forget every statistic: the start of a stream."""
        self.sums = None  # per iteration: (S (J, C, C, F) complex64, W (J, F) float32), made on first use
        self.scale = 1.0

    def __call__(self, targets, x):
        """Filter the next frames.

        Args:
            targets: ``(nb_targets, {1, nb_channels}, nb_frames, nb_bins)`` float32 magnitudes.
            x: ``(nb_channels, nb_frames, nb_bins)`` complex64 mixture frames.

        Returns:
            ``(nb_targets [+1 residual], nb_channels, nb_frames, nb_bins)`` complex64.
        """
        y = filtering.initial_estimates(targets, x, self.softmask, self.residual)
        if self.niter == 0 or not x.shape[1]:
            return y
        if self.sums is None:
            shape = (y.shape[0], self.nb_channels, self.nb_channels, self.nb_bins)
            self.sums = [(np.zeros(shape, np.complex64), np.zeros(shape[:1] + shape[3:], np.float32))
                         for _ in range(self.niter)]
        for t in range(x.shape[1]):
            self.scale = max(self.scale, float(np.abs(x[:, t]).max()) / self.scale_factor)
            frame = y[:, :, t]  # (J, C, F), a view: filtered in place
            for S, W in self.sums:
                frame[...] = self._step(frame, x[:, t], S, W)
        return y

    def _step(self, y, x, S, W):
        """One EM iteration on one frame: update the sums S, W in place with y, return the new y.

        y: (J, C, F) complex64 estimates; x: (C, F) complex64.
        """
        power = (y.real * y.real + y.imag * y.imag).astype(np.float32)
        v = power.mean(axis=1)  # (J, F)
        S *= self.lam
        S += y[:, :, None, :] * np.conj(y[:, None, :, :])
        W *= self.lam
        W += v
        s2 = np.float32(self.scale * self.scale)
        R = S / (np.float32(self.eps) * s2 + W)[:, None, None, :]  # (J, C, C, F)
        vR = v[:, None, None, :] * R
        cxx = vR.sum(axis=0)  # (C, C, F), without the regularization
        r = np.float32(np.sqrt(np.float32(self.eps))) * s2
        if self.nb_channels == 1:
            z = x / (cxx[0] + r)  # (1, F)
        else:
            z = _solve_2x2(cxx, r, x)
        return np.einsum("jcdf,df->jcf", vR, z).astype(np.complex64)


def _solve_2x2(S, r, x):
    """``(r I + S)^-1 x`` per bin for Hermitian PSD ``S`` (2, 2, F) and x (2, F), as the offline
    kernel: det(S) clamped at 0 (float32 cancellation), the regularization added outside the
    adjugate so that it is not lost next to large diagonal terms (mono in stereo)."""
    a, b, c = S[0, 0].real, S[1, 1].real, S[0, 1]
    det = np.maximum(a * b - (c.real * c.real + c.imag * c.imag), 0) + (a + b) * r + r * r
    z0 = (b * x[0] - c * x[1] + r * x[0]) / det
    z1 = (a * x[1] - np.conj(c) * x[0] + r * x[1]) / det
    return np.stack([z0, z1])
