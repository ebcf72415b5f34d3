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
from unmix.dsp.jit import kernel
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
        self.sums = self.weights = None  # made on first use, when the number of sources is known
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
            self.sums = np.zeros((self.niter, y.shape[0], self.nb_channels, self.nb_channels, self.nb_bins),
                                 np.complex64)  # S of each iteration and source (the full matrix)
            self.weights = np.zeros((self.niter, y.shape[0], self.nb_bins), np.float32)  # W
        self.scale = _causal_em_kernel(y, np.ascontiguousarray(x, np.complex64), self.sums, self.weights,
                                       np.float32(self.lam), np.float32(self.eps), np.float32(self.scale_factor),
                                       np.float32(self.scale))
        return y


@kernel
def _causal_em_kernel(y, x, S, W, lam, eps, scale_factor, scale):
    """The causal EM on every frame of y (J, C, T, F) complex64, in place, in frame order.

    S (niter, J, C, C, F) complex64 and W (niter, J, F) float32 are the sums (updated); `scale` is
    the running scale before the first frame; returns it after the last. Per bin, as
    `filtering._separate_stereo_kernel`: Cxx = r I + sum_j v_j R_j inverted in closed form, det(S)
    clamped at 0 (float32 cancellation), the regularization r added outside the adjugate.
    """
    nb_sources, nb_channels, nb_frames, nb_bins = y.shape
    v = np.empty(nb_sources, np.float32)
    gain = np.empty(nb_sources, np.float32)
    for t in range(nb_frames):
        loudest = np.float32(0)
        for c in range(nb_channels):
            for f in range(nb_bins):
                loudest = max(loudest, abs(x[c, t, f]))
        scale = max(scale, loudest / scale_factor)
        s2 = scale * scale
        r = np.float32(np.sqrt(eps)) * s2
        for k in range(S.shape[0]):
            for f in range(nb_bins):
                for j in range(nb_sources):
                    power = np.float32(0)
                    for c in range(nb_channels):
                        z = y[j, c, t, f]
                        power += z.real * z.real + z.imag * z.imag
                    v[j] = power / np.float32(nb_channels)
                    W[k, j, f] = lam * W[k, j, f] + v[j]
                    for c1 in range(nb_channels):
                        for c2 in range(nb_channels):
                            S[k, j, c1, c2, f] = lam * S[k, j, c1, c2, f] + y[j, c1, t, f] * np.conj(y[j, c2, t, f])
                    gain[j] = v[j] / (eps * s2 + W[k, j, f])  # v_j R_j = gain_j S_j
                x0 = x[0, t, f]
                if nb_channels == 1:
                    cxx = r
                    for j in range(nb_sources):
                        cxx += gain[j] * S[k, j, 0, 0, f].real
                    for j in range(nb_sources):
                        y[j, 0, t, f] = gain[j] * S[k, j, 0, 0, f] * (x0 / cxx)
                    continue
                x1 = x[1, t, f]
                a, b, c01 = np.float32(0), np.float32(0), np.complex64(0)
                for j in range(nb_sources):
                    a += gain[j] * S[k, j, 0, 0, f].real
                    b += gain[j] * S[k, j, 1, 1, f].real
                    c01 += gain[j] * S[k, j, 0, 1, f]
                det = max(a * b - (c01.real * c01.real + c01.imag * c01.imag), np.float32(0)) + (a + b) * r + r * r
                z0 = (b * x0 - c01 * x1 + r * x0) / det
                z1 = (a * x1 - np.conj(c01) * x0 + r * x1) / det
                for j in range(nb_sources):
                    y[j, 0, t, f] = gain[j] * (S[k, j, 0, 0, f] * z0 + S[k, j, 0, 1, f] * z1)
                    y[j, 1, t, f] = gain[j] * (S[k, j, 1, 0, f] * z0 + S[k, j, 1, 1, f] * z1)
    return scale
