#!/usr/bin/env python3
"""Statistics of a rendered set (MUSDB18-HQ layout + the generator's _meta/ folder).

    python check_dataset.py ROOT [--subset train] [--png DIR] [--json FILE] [--meta-only]

Audio, per stem over all songs: loudness (BS.1770 LUFS of the active part, integrated over the
song), silence ratio (100 ms frames below -50 dBFS), spectral centroid (median per song; the
spread across songs), and per track max |mixture - sum(stems)| in LSB (must be 0).
Metadata: vocal pitch range, and how often each genre, GM program, soundfont, drum kit,
voice, language, lyric density and effect is used. --png writes one 5-panel log spectrogram
per song. Songs whose info.json is not of this generator (the first default model's songs, rendered
by ../shared/tools/musdb_synth) count in the audio statistics only.
"""
import argparse
import collections
import glob
import json
import os

import numpy as np
import soundfile as sf
from scipy import signal

STEMS = ("vocals", "drums", "bass", "other")


def lufs(x, sr):
    """BS.1770 integrated loudness of (n, 2) float audio: K-weighting, 400 ms blocks with 75 %
    overlap, absolute (-70 LUFS) and relative (-10 LU) gates. -inf for silence."""
    b1, a1 = [1.53512485958697, -2.69169618940638, 1.19839281085285], [1.0, -1.69065929318241, 0.73248077421585]
    b2, a2 = [1.0, -2.0, 1.0], [1.0, -1.99004745483398, 0.99007225036621]
    if sr != 48000:                                  # the standard's coefficients are for 48 kHz
        x = signal.resample_poly(x, 480, sr // 100, axis=0)
    y = signal.lfilter(b2, a2, signal.lfilter(b1, a1, x, axis=0), axis=0)
    blk, hop = 19200, 4800
    if len(y) < blk:
        return float("-inf")
    z = np.array([(y[i:i + blk] ** 2).mean(axis=0).sum() for i in range(0, len(y) - blk + 1, hop)])
    lk = -0.691 + 10 * np.log10(z + 1e-20)
    g = z[lk > -70]
    if not len(g):
        return float("-inf")
    rel = -0.691 + 10 * np.log10(g.mean()) - 10
    g = z[(lk > -70) & (lk > rel)]
    return float(-0.691 + 10 * np.log10(g.mean()))


def stem_stats(x, sr):
    """dict(lufs, silence, centroid_hz) of a (n, 2) float stem."""
    mono = x.mean(axis=1)
    fr = int(0.1 * sr)
    e = np.sqrt((mono[: len(mono) // fr * fr].reshape(-1, fr) ** 2).mean(axis=1))
    f, _, Z = signal.stft(mono, sr, nperseg=4096, noverlap=3072, boundary=None)
    P = np.abs(Z) ** 2
    tot = P.sum(axis=0)
    act = tot > 1e-10 * P.shape[0]
    cen = (f[:, None] * P).sum(axis=0)[act] / tot[act] if act.any() else np.array([np.nan])
    return dict(lufs=round(lufs(x, sr), 1), silence=round(float((e < 10 ** (-50 / 20)).mean()), 3),
                centroid_hz=round(float(np.median(cen)), 0)), np.abs(Z)


def track_stats(tdir, png=None):
    """Per-track statistics (and an optional spectrogram PNG)."""
    ext = "wav" if os.path.exists(os.path.join(tdir, "mixture.wav")) else "flac"
    raw = {k: sf.read(os.path.join(tdir, "%s.%s" % (k, ext)), dtype="int16", always_2d=True)
           for k in STEMS + ("mixture",)}
    sr = raw["mixture"][1]
    out = dict(track=os.path.basename(tdir))
    ssum = sum(raw[k][0].astype(np.int32) for k in STEMS)
    out["max_abs_mix_minus_sum_lsb"] = int(np.abs(ssum - raw["mixture"][0]).max())
    specs = {}
    for k in STEMS + ("mixture",):
        out[k], specs[k] = stem_stats(raw[k][0] / 32768.0, sr)
    if png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        dur = len(raw["mixture"][0]) / sr
        fig, ax = plt.subplots(5, 1, figsize=(10, 11), sharex=True)
        for i, k in enumerate(("mixture",) + STEMS):
            ax[i].imshow(20 * np.log10(specs[k][:1024] + 1e-6), origin="lower", aspect="auto", vmin=-80, vmax=0,
                         extent=[0, dur, 0, 1024 * sr / 4096])
            ax[i].set_ylabel(k + "\nHz")
        ax[-1].set_xlabel("s")
        fig.suptitle(out["track"])
        fig.tight_layout()
        fig.savefig(png, dpi=60)
        plt.close(fig)
    return out


def usage(metas):
    """Counters of what the songs use, from their info.json."""
    c = collections.defaultdict(collections.Counter)
    for m in metas:
        c["genre"][m["plan"]["genre"]] += 1
        c["mode"][m["plan"]["mode"]] += 1
        d = m["drums"]
        c["drum style"][d["style"]] += 1
        for key in ("kit", "perc_kit"):
            if key in d:
                k = d[key]
                c["drum kit"]["%s:%s" % (k["backend"], k.get("kit") or "%s/p%d" % (k["soundfont"], k["program"]))] += 1
        for stem in ("bass", "other"):
            for p in m[stem]:
                c["GM program (%s)" % stem][p["program"]] += 1
                if "analog" in p:                                     # played by the analog synth
                    a = p["analog"]
                    c["soundfont"]["analog synth"] += 1
                    c["analog patch (%s)" % stem]["%s:%s x%d%s" % (a["role"], a["wave"], a["unison"],
                                                                   "+sub" if a["sub"] else "")] += 1
                else:
                    c["soundfont"][p["soundfont"]] += 1
                c["part style"]["%s:%s" % (p["part"], p.get("style", "-"))] += 1
                for fx in ("comp", "saturation", "reverb", "automation_db"):
                    c["effect (bass/other parts)"][fx] += fx in p["strip"]
        v = m["vocals"]
        if v.get("instrumental"):
            c["vocals"]["instrumental"] += 1
            continue
        c["voice"]["%s(%s)" % (v["voice"], v["gender"])] += 1
        c["language"][v["language"]] += 1
        c["lyric density"][v["density"]] += 1
        for fx in ("doubled", "harmony_interval_steps", "breath_level", "saturation", "delay_s"):
            c["vocal effect"][fx] += fx in v
        c["vocal effect"]["reverb:" + v["reverb"]] += 1
        c["vocal effect"]["vibrato>0.2st"] += v["vib_depth"] > 0.2
        c["vocal effect"]["breathy"] += v["breath"] > 0
        c["mix"]["bus compression"] += "bus_comp" in m["mix"]
    return c


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root")
    ap.add_argument("--subset", default="train")
    ap.add_argument("--png", default=None, help="folder for spectrogram PNGs")
    ap.add_argument("--json", default=None, help="write the per-track statistics here")
    ap.add_argument("--meta-only", action="store_true", help="skip the audio statistics (minutes for 400 songs)")
    a = ap.parse_args()
    tracks = sorted(d for d in glob.glob(os.path.join(a.root, a.subset, "*")) if os.path.isdir(d))
    if not tracks:
        raise SystemExit("no tracks in %s" % os.path.join(a.root, a.subset))
    if not a.meta_only:
        audio_summary(tracks, a.png, a.json)
    meta_summary(a.root, tracks)


def audio_summary(tracks, png_dir, json_path):
    """Print the audio table (and write PNGs and the per-track JSON)."""
    if png_dir:
        os.makedirs(png_dir, exist_ok=True)
    res = [track_stats(t, os.path.join(png_dir, os.path.basename(t).replace(" ", "_") + ".png") if png_dir else None)
           for t in tracks]
    print("%d tracks; max |mixture - sum(stems)| over all: %d LSB" % (len(res), max(r["max_abs_mix_minus_sum_lsb"] for r in res)))
    print("%-8s %22s %22s %28s" % ("stem", "LUFS mean (min..max)", "silence mean (min..max)", "centroid Hz median (p10..p90)"))
    for k in ("mixture",) + STEMS:
        lu = np.array([r[k]["lufs"] for r in res])
        lu = lu[np.isfinite(lu)]
        si = np.array([r[k]["silence"] for r in res])
        ce = np.array([r[k]["centroid_hz"] for r in res])
        ce = ce[np.isfinite(ce)]
        print("%-8s %7.1f (%5.1f..%5.1f) %9.2f (%4.2f..%4.2f) %10.0f (%5.0f..%5.0f)" % (
            k, lu.mean() if len(lu) else np.nan, lu.min() if len(lu) else np.nan, lu.max() if len(lu) else np.nan,
            si.mean(), si.min(), si.max(), np.median(ce), np.percentile(ce, 10), np.percentile(ce, 90)))
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(res, fh, indent=1)


def meta_summary(root, tracks):
    """Print what the songs of this generator use (from root/_meta/<track>/info.json)."""
    metas, other = [], 0
    for t in tracks:
        p = os.path.join(root, "_meta", os.path.basename(t), "info.json")
        if os.path.exists(p):
            with open(p) as fh:
                meta = json.load(fh)
            if isinstance(meta.get("plan"), dict) and "genre" in meta["plan"]:
                metas.append(meta)
            else:
                other += 1
    if other:
        print("%d songs have another generator's metadata and are left out below" % other)
    if metas:
        vs = [m["vocals"] for m in metas if not m["vocals"].get("instrumental")]
        if vs:
            span = np.array([v["pitch_hi"] - v["pitch_lo"] for v in vs])
            print("vocal pitch range: lowest MIDI %d, highest %d; per song span %s semitones" % (
                min(v["pitch_lo"] for v in vs), max(v["pitch_hi"] for v in vs),
                sorted(span.tolist()) if len(span) <= 20 else "median %d (p10 %d .. p90 %d)" % (
                    np.median(span), np.percentile(span, 10), np.percentile(span, 90))))
        bpm = [m["plan"]["bpm"] for m in metas]
        print("tempo: %.0f..%.0f bpm; songs with a dropped-out stem in some bars: %d of %d" % (
            min(bpm), max(bpm), sum(any(v < m["plan"]["n_bars"] for k, v in m["plan"]["active_bars"].items()
                                        if k in ("drums", "bass", "vocals")) for m in metas), len(metas)))
        for name, cnt in usage(metas).items():
            print("%s (%d distinct): %s" % (name, len(cnt), ", ".join("%s %d" % kv for kv in cnt.most_common())))


if __name__ == "__main__":
    main()
