"""BSSEval v4 (museval's ``bss_eval`` in images mode with time-invariant filters), reorganised
for speed; the same numbers as ``museval.evaluate(..., mode="v4")``.

museval (metrics.py, ``framewise_filters=False``) scores each estimate ``e_j`` against the true
images ``s_i`` (``nsrc`` sources, ``nchan`` channels, ``F = 512`` taps) like this:

1. Gram matrix ``G`` of the references delayed by 0..F-1 samples, over the whole track:
   ``G[(i,ci,r), (k,ck,c)] = <s_{i,ci} delayed r, s_{k,ck} delayed c>`` (nsrc nchan F square);
   ``D_j[(i,ci,r), c] = <s_{i,ci} delayed r, e_{j,c}>``.
2. Filters ``C_j = (G + eps I)^-1 D_j`` (projection of e_j on all references) and
   ``Cj_j = (G_jj + eps I)^-1 D_jj`` (on its own reference only), eps = float64 epsilon.
3. In each window [a, a + win) (hop `hop`; a track shorter than a window is one window), the
   window of every reference is convolved with those filters (``P_all``, ``P_own``,
   ``win + F - 1`` samples: the convolution's tail is kept, samples outside the window are
   not used) and, with ``s = s_j`` and ``e = e_j`` zero-padded by F - 1 samples,
   ``SDR = |s|^2 / |e - s|^2``, ``ISR = |s|^2 / |P_own - s|^2``,
   ``SIR = |P_own|^2 / |P_all - P_own|^2``, ``SAR = |P_all|^2 / |e - P_all|^2`` in dB
   (a zero denominator gives +inf). A window where any reference or estimate is silent (its
   channels sum to zero at every sample) is NaN for every source and metric.

museval computes step 1 with full-length FFTs (``2^ceil(log2(N + F - 1))`` points, one per
pair of channels and once more per estimate), solves one dense system per estimate and makes
about 20 ``fftconvolve`` calls per source and window. Here:

- the lags 0..F-1 of every needed cross-correlation come from one pass over the signals in
  blocks of ``CORR_FFT - F + 1`` samples: each channel's blocks are transformed once, and the
  cross-spectra of all pairs are summed over blocks with one small matrix product per
  frequency (`cross_correlations`);
- ``G + eps I`` is factored once (Cholesky; LU as museval when it is not positive definite)
  and solved for every estimate's channels at once;
- each window's references are transformed once and all filters applied as one matrix
  product per frequency; the energies of the projections and of their differences are
  taken on those spectra (Parseval), with no inverse transform (`_window_scores`); windows
  run on threads.

The results equal museval's up to floating-point rounding: tested on a grid of cases to
1e-3 dB (tests/test_bsseval.py). Where a value is so large (> `ROUNDING_DB`) that it measures
rounding noise (an estimate equal to its reference: ISR, SIR and SAR near 300 dB, which
museval's own operation order decides), that group of sources is scored by museval itself, so
the numbers stay museval's there too.

Arrays are museval's ``(nsrc, nb_timesteps, nb_channels)`` in `evaluate`, and unmix's
``(nb_channels, nb_timesteps)`` per target in `eval_track`.
"""
import concurrent.futures
import os

import numpy as np
import scipy.fft
import scipy.linalg

FILTERS_LEN = 512  # museval's distortion filter taps
CORR_FFT = 16384  # FFT size of the blocked correlations (blocks of CORR_FFT - F + 1 samples)
CORR_BLOCKS = 32  # blocks transformed at once (bounds memory: 32 x 16384 x channels)
WINDOW_BATCH = 8  # windows projected at once per thread
ROUNDING_DB = 150.0  # above this, a value measures rounding noise: museval decides it
METRICS = ("SDR", "ISR", "SIR", "SAR")


def default_workers():
    """Threads for the FFTs and the windows: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# ----------------------------------------------------------------------------------------
# correlations


def cross_correlations(x, y, nb_lags, fft_size=CORR_FFT, chunk=CORR_BLOCKS, workers=1):
    """Correlations of every channel of `x` with every channel of `y` at lags 0..nb_lags-1.

    ``c[p, q, m] = sum_n x[p][n] y[q][n + m]`` (signals are zero after their end), computed in
    blocks of ``B = fft_size - nb_lags + 1`` samples of x against ``fft_size`` samples of y,
    so that the circular correlation of a block never wraps; the cross-spectra are summed
    over blocks before one inverse transform.

    Args:
        x: sequence of P signals ``(nb_timesteps,)`` (any float dtype or strides).
        y: sequence of Q signals ``(nb_timesteps,)``, the same length.

    Returns:
        float64 ``(P, Q, nb_lags)``.
    """
    n = len(x[0])
    block = fft_size - nb_lags + 1
    if block < 1:
        raise ValueError(f"fft_size {fft_size} too small for {nb_lags} lags")
    nb_blocks = -(-n // block)
    spectra = np.zeros((fft_size // 2 + 1, len(x), len(y)), complex)
    for first in range(0, nb_blocks, chunk):
        count = min(chunk, nb_blocks - first)
        start = first * block
        xs = _segment(x, start, count * block)  # (P, count * block)
        ys = _segment(y, start, count * block + nb_lags - 1)
        xf = scipy.fft.rfft(xs.reshape(len(x), count, block), n=fft_size, axis=-1, workers=workers)
        windows = np.lib.stride_tricks.sliding_window_view(ys, fft_size, axis=-1)[:, ::block][:, :count]
        yf = scipy.fft.rfft(windows, axis=-1, workers=workers)  # (Q, count, nb_bins)
        # per frequency: (P x count) @ (count x Q), summed over the blocks by the product
        xf = np.ascontiguousarray(np.conj(xf).transpose(2, 0, 1))
        yf = np.ascontiguousarray(yf.transpose(2, 1, 0))
        spectra += np.matmul(xf, yf)
    lags = scipy.fft.irfft(spectra, n=fft_size, axis=0, workers=workers)[:nb_lags]
    return np.ascontiguousarray(lags.transpose(1, 2, 0))


def _segment(signals, start, length):
    """float64 ``(len(signals), length)``: samples start..start+length, zeros past the end."""
    out = np.zeros((len(signals), length))
    for row, signal in zip(out, signals):
        part = signal[start:start + length]
        row[: len(part)] = part
    return out


# ----------------------------------------------------------------------------------------
# filters


def gram_matrix(ref_corr, eps=0.0):
    """museval's ``G`` (after ``_reshape_G``) from the references' correlations, plus
    ``eps`` on the diagonal (museval's regularisation).

    Args:
        ref_corr: ``(P, P, F)`` correlations of the P = nsrc nchan reference channels
            (source-major) at lags 0..F-1.

    Returns:
        ``(P F, P F)``: ``G[(p, r), (q, c)] = sum_n s_p[n - r] s_q[n - c]``, that is the
        correlation of p and q at lag r - c (taken from q, p at lag c - r when negative).
    """
    nb_ch, _, nb_taps = ref_corr.shape
    # lags F-1..-(F-1) of each pair, descending: lag m >= 0 is c[p, q, m], lag -m is c[q, p, m]
    desc = np.concatenate([ref_corr[:, :, ::-1], ref_corr.transpose(1, 0, 2)[:, :, 1:]], axis=-1)
    # row r of a block is lags r, r-1, ..., r-F+1: a window of `desc` starting at F-1-r
    blocks = np.lib.stride_tricks.sliding_window_view(desc, nb_taps, axis=-1)[:, :, ::-1]  # (P, Q, F, F)
    gram = np.empty((nb_ch, nb_taps, nb_ch, nb_taps))
    gram[...] = blocks.transpose(0, 2, 1, 3)
    gram = gram.reshape(nb_ch * nb_taps, nb_ch * nb_taps)
    gram.flat[:: gram.shape[0] + 1] += eps
    return gram


def solve_filters(gram, rhs, reg, diagonal_max):
    """``(G + eps I)^-1 rhs`` as museval computes it, for many right-hand sides at once.

    Cholesky of ``G + eps I``, as one factorisation for all estimates. When that is not
    numerically positive definite (eps is lost in rounding on a diagonal of signal energies:
    band-limited music), the path museval itself takes, LU (``np.linalg.solve``): damping the
    system instead (a larger diagonal) shrinks the filters along the directions the references
    barely span, which museval keeps, and moved SIR by up to 1.5e-2 dB on real music with
    strongly non-zero-mean estimates. Only where LU meets an exactly zero pivot (a reference
    with two identical channels makes ``G`` exactly singular; museval's own rounding of ``G``
    usually spares its LU that) is a diagonal of ``size * eps * max(diag G)`` added, and
    museval's last resort, least squares on ``G``, follows if even that fails.

    Args:
        gram: a function returning a new ``G + reg I``; overwritten by the factorisation.
        reg: museval's eps.
        diagonal_max: the largest value on G's diagonal (an energy).
    """
    try:
        factor = scipy.linalg.cho_factor(gram(reg), overwrite_a=True, check_finite=False)
        return scipy.linalg.cho_solve(factor, rhs, check_finite=False)
    except np.linalg.LinAlgError:
        pass
    jitter = rhs.shape[0] * np.finfo(float).eps * diagonal_max
    for diagonal in (reg, reg + jitter):
        try:
            return np.linalg.solve(gram(diagonal), rhs)
        except np.linalg.LinAlgError:
            continue
    return np.linalg.lstsq(gram(0.0), rhs, rcond=-1)[0]


def distortion_filters(corr, nsrc, nchan, nb_taps):
    """museval's ``C`` and ``Cj`` for every estimate.

    Args:
        corr: ``(P, 2 P, F)`` correlations of the P = nsrc nchan reference channels with the
            reference channels then the estimate channels (source-major).

    Returns:
        ``(c_all, c_own)``: ``(nsrc, nsrc, nchan, F, nchan)`` filters of estimate j on every
        reference (museval's ``C[j]``), and ``(nsrc, nchan, F, nchan)`` on its own reference
        only (museval's ``Cj[j, j, 0]``).
    """
    nb_ch = nsrc * nchan
    eps = np.finfo(float).eps
    ref_corr = corr[:, :nb_ch]
    # rhs[(p, k), (j, c)] = correlation of reference channel p with estimate channel (j, c) at lag k
    rhs = corr[:, nb_ch:].transpose(0, 2, 1).reshape(nb_ch * nb_taps, nb_ch)
    energy = float(np.einsum("ppk->pk", ref_corr)[:, 0].max())  # G's diagonal: lag-0 energies
    c_all = solve_filters(lambda reg: gram_matrix(ref_corr, reg), rhs, eps, energy)
    c_all = c_all.reshape(nsrc, nchan, nb_taps, nsrc, nchan).transpose(3, 0, 1, 2, 4)
    c_own = np.empty((nsrc, nchan, nb_taps, nchan))
    for j in range(nsrc):
        ch = slice(j * nchan, (j + 1) * nchan)
        rows = slice(j * nchan * nb_taps, (j + 1) * nchan * nb_taps)
        own = solve_filters(lambda reg: gram_matrix(ref_corr[ch, ch], reg), rhs[rows, ch], eps, energy)
        c_own[j] = own.reshape(nchan, nb_taps, nchan)
    return np.ascontiguousarray(c_all), c_own


# ----------------------------------------------------------------------------------------
# windows


def framing(nb_timesteps, window, hop):
    """museval's ``Framing``: the (start, stop) of each window. Windows that would run past
    the end are dropped; a track no longer than a window is one window of the whole track."""
    if window < nb_timesteps:
        nwin = int(np.floor((nb_timesteps - window + hop) / hop))
    else:
        nwin = 1
    return [(int(t * hop), int(min(t * hop + window, nb_timesteps))) for t in range(nwin)]


def _any_silent(sources, start, stop):
    """museval's ``_any_source_silent`` on samples start..stop (None: to the end) of sources
    ``(nchan, nb_timesteps)``: a source whose channels sum to zero at every sample."""
    return any(not np.any(np.sum(source[:, start:stop], axis=0, dtype=float)) for source in sources)


def _filter_spectra(c_all, c_own, fft_size):
    """Frequency responses as one matrix per frequency: ``(nb_bins, nsrc nchan, 2 nsrc nchan)``
    mapping a window's reference channels (i, ci) to the outputs (P_all then P_own of
    estimate j, channel c)."""
    nsrc, _, nchan, nb_taps, _ = c_all.shape
    nb_ch = nsrc * nchan
    full = np.zeros((nb_ch, 2, nsrc, nchan, nb_taps))  # input, kind, j, c, tap
    full[:, 0] = c_all.transpose(1, 2, 0, 4, 3).reshape(nb_ch, nsrc, nchan, nb_taps)
    for j in range(nsrc):
        full[j * nchan:(j + 1) * nchan, 1, j] = c_own[j].transpose(0, 2, 1)
    spectra = scipy.fft.rfft(full.reshape(nb_ch, 2 * nb_ch, nb_taps), n=fft_size, axis=-1)
    return np.ascontiguousarray(spectra.transpose(2, 0, 1))


def _window_spectra(signals, starts, length, fft_size):
    """Spectra of windows of every channel: ``(len(starts), nsrc nchan, nb_bins)``, zero-padded
    to `fft_size` (signals: nsrc arrays ``(nchan, nb_timesteps)``)."""
    nchan = signals[0].shape[0]
    segments = np.zeros((len(starts), len(signals) * nchan, fft_size))  # one copy: cast and zero-padding
    for w, a in enumerate(starts):
        for j, x in enumerate(signals):
            segments[w, j * nchan:(j + 1) * nchan, :length] = x[:, a:a + length]
    return scipy.fft.rfft(segments, axis=-1, overwrite_x=True)


def _energies(spectra, fft_size):
    """Energy (sum of squares over time) of signals given by their rfft spectra, by Parseval:
    ``(w, nsrc, nchan, nb_bins)`` (last axis contiguous) -> ``(w, nsrc)``."""
    weight = np.full(spectra.shape[-1], 2.0)  # bins 1.. stand for themselves and their mirror
    weight[0] = 1.0
    if fft_size % 2 == 0:
        weight[-1] = 1.0
    parts = spectra.view(np.float64)  # real, imaginary, real, ...: one pass, no temporaries
    return np.einsum("wscf,wscf,f->ws", parts, parts, np.repeat(weight, 2)) / fft_size


def _db(num, den):
    """museval's ``_safe_db``: +inf for a zero denominator, else 10 log10(num / den)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 10 * np.log10(num / den)
    return np.where(den == 0, np.inf, out)


def _window_scores(refs, ests, spectra, starts, length, fft_size):
    """SDR, ISR, SIR, SAR ``(len(starts), 4, nsrc)`` of the windows beginning at `starts`.

    The projections ``P_all``, ``P_own`` of a window (``length + F - 1`` samples: museval keeps
    the convolutions' tails) and the zero-padded reference and estimate windows all fit in
    `fft_size` samples, so their energies and those of their differences are taken on their
    spectra (Parseval) rather than transforming the projections back.
    """
    nsrc = len(refs)
    sf = _window_spectra(refs, starts, length, fft_size)  # (w, P, nb_bins)
    ef = _window_spectra(ests, starts, length, fft_size)
    proj = np.matmul(np.ascontiguousarray(sf.transpose(2, 0, 1)), spectra)  # (nb_bins, w, 2P)
    proj = np.ascontiguousarray(proj.transpose(1, 2, 0)).reshape(len(starts), 2, nsrc, -1, sf.shape[-1])
    p_all, p_own = proj[:, 0], proj[:, 1]
    shape = (len(starts), nsrc, -1, sf.shape[-1])
    sf, ef = sf.reshape(shape), ef.reshape(shape)
    # SDR needs no projection: in time, as museval sums it
    ref = np.stack([np.stack([x[:, a:a + length] for x in refs]) for a in starts]).astype(float)
    est = np.stack([np.stack([x[:, a:a + length] for x in ests]) for a in starts]).astype(float)
    energy_s = np.einsum("wsct,wsct->ws", ref, ref)
    return np.stack([
        _db(energy_s, np.einsum("wsct,wsct->ws", est - ref, est - ref)),
        _db(energy_s, _energies(p_own - sf, fft_size)),
        _db(_energies(p_own, fft_size), _energies(p_all - p_own, fft_size)),
        _db(_energies(p_all, fft_size), _energies(ef - p_all, fft_size)),
    ], axis=1)


# ----------------------------------------------------------------------------------------
# museval.evaluate


def check_inputs(references, estimates):
    """museval's checks (``metrics.validate``), with its messages.

    Args:
        references, estimates: sequences of nsrc signals ``(nchan, nb_timesteps)``.

    Raises:
        ValueError: as museval for different shapes or an entirely silent source.
    """
    shapes = {np.shape(x) for x in list(references) + list(estimates)}
    if len(shapes) > 1 or len(references) != len(estimates):
        raise ValueError(
            "The shape of estimated sources and the true sources should match. reference_sources.shape "
            f"= {_museval_shape(references)}, estimated_sources.shape = {_museval_shape(estimates)}")
    if _any_silent(references, 0, None):
        raise ValueError(
            "All the reference sources should be non-silent (not all-zeros), but at least one of the "
            "reference sources is all 0s, which introduces ambiguity to the evaluation. (Otherwise we "
            "can add infinitely many all-zero sources.)")
    if _any_silent(estimates, 0, None):
        raise ValueError(
            "All the estimated sources should be non-silent (not all-zeros), but at least one of the "
            "estimated sources is all 0s. Since we require each reference source to be non-silent, "
            "having a silent estimated source will result in an underdetermined system.")


def _museval_shape(sources):
    """museval's ``(nsrc, nb_timesteps, nchan)`` of a list of ``(nchan, nb_timesteps)``."""
    nchan, n = np.shape(sources[0])
    return (len(sources), n, nchan)


def pad_or_truncate(reference, estimate):
    """museval's ``pad_or_truncate``: an estimate ``(nchan, any nb_timesteps)`` cut or
    zero-padded to the reference's length."""
    n = reference.shape[-1]
    if estimate.shape[-1] > n:
        return estimate[..., :n]
    if estimate.shape[-1] < n:
        return np.pad(estimate, ((0, 0), (0, n - estimate.shape[-1])))
    return estimate


def bss_eval_v4(references, estimates, window, hop, corr=None, nb_taps=FILTERS_LEN, workers=None):
    """BSSEval v4 of a group of sources scored jointly.

    Args:
        references, estimates: nsrc signals ``(nchan, nb_timesteps)`` each, all of one shape
            (see `pad_or_truncate`), any float dtype.
        window, hop: in samples.
        corr: precomputed `cross_correlations` of the reference channels with the reference
            then the estimate channels (source-major), ``(P, 2 P, F)``; computed when None.
        workers: threads (default: `default_workers`).

    Returns:
        float64 ``(4, nsrc, nwin)``: SDR, ISR, SIR, SAR in dB (museval's order of `evaluate`).
    """
    workers = workers or default_workers()
    check_inputs(references, estimates)
    nsrc, (nchan, n) = len(references), references[0].shape
    if corr is None:
        channels = [x[c] for x in references for c in range(nchan)]
        corr = cross_correlations(channels, channels + [x[c] for x in estimates for c in range(nchan)], nb_taps,
                                  workers=workers)
    c_all, c_own = distortion_filters(corr, nsrc, nchan, nb_taps)
    frames = framing(n, window, hop)
    length = frames[0][1] - frames[0][0]
    fft_size = scipy.fft.next_fast_len(length + nb_taps - 1, real=True)
    spectra = _filter_spectra(c_all, c_own, fft_size)
    batches = [frames[i:i + WINDOW_BATCH] for i in range(0, len(frames), WINDOW_BATCH)]

    def score(batch):
        keep = [i for i, (a, b) in enumerate(batch)
                if not (_any_silent(references, a, b) or _any_silent(estimates, a, b))]
        out = np.full((len(batch), 4, nsrc), np.nan)
        if keep:
            out[keep] = _window_scores(references, estimates, spectra, [batch[i][0] for i in keep], length, fft_size)
        return out

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        scores = np.concatenate(list(pool.map(score, batches)))  # (nwin, 4, nsrc)
    return scores.transpose(1, 2, 0)


def needs_museval(scores):
    """True when a finite value exceeds `ROUNDING_DB`: an estimate equals its reference up to
    rounding, where the value is rounding noise that only museval's own arithmetic repeats."""
    finite = scores[np.isfinite(scores)]
    return bool(finite.size and finite.max() > ROUNDING_DB)


def evaluate(references, estimates, win=44100, hop=44100, workers=None):
    """``museval.evaluate(references, estimates, win, hop, mode="v4")``.

    Args:
        references, estimates: ``(nsrc, nb_timesteps, nchan)`` (museval's layout); estimates
            are cut or zero-padded to the references' length.

    Returns:
        ``(SDR, ISR, SIR, SAR)``, each float64 ``(nsrc, nwin)``.
    """
    refs = [x.T for x in np.asarray(references)]
    ests = [pad_or_truncate(r, x.T) for r, x in zip(refs, np.asarray(estimates))]
    scores = bss_eval_v4(refs, ests, win, hop, workers=workers)
    if needs_museval(scores):
        scores = _museval_evaluate(refs, ests, win, hop)
    return tuple(scores)


def _museval_evaluate(refs, ests, win, hop):
    """museval itself on lists of ``(nchan, nb_timesteps)``: ``(4, nsrc, nwin)``."""
    import museval

    return np.stack(museval.evaluate([x.T for x in refs], [x.T for x in ests], win=win, hop=hop, mode="v4"))


# ----------------------------------------------------------------------------------------
# museval.eval_mus_track


def eval_track(references, estimates, groups, window, hop, workers=None):
    """Score several groups of one track (as ``museval.eval_mus_track``: the MUSDB targets
    jointly, then vocals/accompaniment), computing the correlations of all the groups'
    signals in one pass.

    Args:
        references: target -> ``(nchan, nb_timesteps)`` true signal.
        estimates: target -> ``(nchan, any nb_timesteps)``, cut or zero-padded to the references.
        groups: lists of targets scored jointly.
        window, hop: in samples.

    Returns:
        list (one per group) of float64 ``(4, nsrc, nwin)``: SDR, ISR, SIR, SAR.
    """
    workers = workers or default_workers()
    names = list(dict.fromkeys(t for group in groups for t in group))
    n = references[names[0]].shape[-1]
    refs = {t: np.asarray(references[t]) for t in names}
    ests = {t: pad_or_truncate(refs[t], np.asarray(estimates[t])) for t in names}
    nchan = refs[names[0]].shape[0]
    if any(refs[t].shape != (nchan, n) or ests[t].shape != (nchan, n) for t in names):
        shapes = ", ".join(f"{t} {refs[t].shape} / {ests[t].shape}" for t in names)
        raise ValueError(f"references and estimates differ in shape: {shapes}")
    ref_ch = [(t, c) for t in names for c in range(nchan)]
    corr = cross_correlations([refs[t][c] for t, c in ref_ch],
                              [refs[t][c] for t, c in ref_ch] + [ests[t][c] for t, c in ref_ch],
                              FILTERS_LEN, workers=workers)
    results = []
    for group in groups:
        rows = [ref_ch.index((t, c)) for t in group for c in range(nchan)]
        cols = rows + [len(ref_ch) + r for r in rows]
        group_refs, group_ests = [refs[t] for t in group], [ests[t] for t in group]
        scores = bss_eval_v4(group_refs, group_ests, window, hop, corr=corr[np.ix_(rows, cols)], workers=workers)
        if needs_museval(scores):
            scores = _museval_evaluate(group_refs, group_ests, window, hop)
        results.append(scores)
    return results
