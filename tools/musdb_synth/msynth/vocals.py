"""The vocals stem: lead melody with lyrics in one of several languages, optional harmony
and doubled takes, breaths, and the vocal chain (EQ, compression, saturation, delay, reverb).

Sung notes are tuples (start_s, end_s, midi, word, velocity).
"""
import numpy as np

from . import effects as fx
from .assets import festival_voices, voices
from .plan import active, chord_at, section_at, step_time
from .singer import Singer, draw_style
from .theory import scale_pitches

LYRICS = {
    "en-us": "love you me night light fire home feel so go day way heart time dream stay hold run my your we sky "
             "rain sun down free know say see all on oh yeah baby now here gone cry fly fall mind soul road true blue",
    "en-gb": "love night light home heart time dream stay hold rain sun free know say all oh now here gone mind soul road",
    "es": "amor noche luz fuego casa vida sol mar cielo corazón tiempo sueño bailar vamos quiero siempre nunca "
          "contigo mío tu yo ay",
    "it": "amore notte luce fuoco casa vita sole mare cielo cuore tempo sogno sempre mai ancora bella cara ti me",
    "pt-br": "amor noite luz fogo casa vida sol mar céu coração tempo sonho sempre nunca saudade você eu meu",
    "fr-fr": "amour nuit lumière feu maison vie soleil mer ciel cœur temps rêve toujours jamais encore toi moi",
    "de": "liebe nacht licht feuer haus leben sonne meer himmel herz zeit traum immer nie noch dich mich",
    "sv": "kärlek natt ljus eld hem liv sol hav himmel hjärta tid dröm alltid aldrig du jag",
    "ru": "любовь ночь свет огонь дом жизнь солнце море небо сердце время мечта всегда",
    "vocalise": "la na da oh ah ooh hey yeah whoa mm",
}
FESTIVAL_LANGS = ("en-us", "en-gb", "vocalise")             # Festival's voices here speak English
LANG_WEIGHTS = {"en-us": 45, "en-gb": 10, "es": 8, "it": 5, "pt-br": 5, "fr-fr": 6, "de": 5, "sv": 3, "ru": 3,
                "vocalise": 10}
# rhythm motifs (step, length) per bar by lyric density
MOTIFS = {
    "sparse": [[(0, 8), (8, 8)], [(0, 4), (4, 12)], [(2, 6), (8, 8)], [(0, 12), (12, 4)]],
    "medium": [[(0, 2), (2, 2), (4, 4), (8, 2), (10, 2), (12, 4)], [(0, 3), (3, 3), (6, 2), (8, 4), (12, 2)],
               [(2, 2), (4, 2), (6, 2), (8, 6)], [(0, 4), (4, 4), (8, 8)], [(4, 2), (6, 2), (8, 2), (10, 6)]],
    "dense": [[(s, 1) for s in range(16)], [(s, 2) for s in range(0, 16, 2)],
              [(0, 1), (1, 1), (2, 2), (4, 1), (5, 1), (6, 2), (8, 1), (9, 1), (10, 2), (12, 4)]],
    "rap": [[(s, 1) for s in range(16) if s % 8 != 7], [(s, 1) for s in range(1, 16)],
            [(0, 1), (1, 1), (2, 1), (3, 1), (4, 2), (6, 1), (7, 1), (8, 1), (9, 1), (10, 1), (11, 1), (12, 2), (14, 2)]],
}


def pick(rng, weights):
    """Draw a key of a {name: weight} dict."""
    k = list(weights)
    p = np.array([weights[x] for x in k], float)
    return k[rng.choice(len(k), p=p / p.sum())]


def make_melody(rng, plan, lo, hi, density, words, part="vocals"):
    """Sung notes over the bars where `part` is active: two alternating motifs per phrase,
    chord tones on strong beats, a breath bar now and then; rap stays within a few semitones.
    Each 4-bar phrase usually starts from a new place in [lo, hi], so a song spans the register."""
    pitches = scale_pitches(plan["key"], plan["scale"], lo, hi)
    motifs = MOTIFS[density]
    a, b = motifs[int(rng.integers(0, len(motifs)))], motifs[int(rng.integers(0, len(motifs)))]
    p = pitches[len(pitches) // 2]
    leap = 0.3 if density == "rap" else 1.0
    notes, k = [], 0
    for bar in range(plan["n_bars"]):
        if not plan["active"][part][bar]:
            continue
        if bar % 4 == 3 and rng.random() < 0.5:
            continue                                                  # rest bar between phrases
        if bar % 4 == 0 and rng.random() < 0.7:
            p = pitches[int(rng.integers(0, len(pitches)))]           # each phrase sits somewhere new
        motif = a if bar % 2 == 0 else b
        for s, d in motif:
            if rng.random() < 0.08:
                continue
            t0 = step_time(plan, bar, s)
            t1 = min(step_time(plan, bar, s + d) if s + d < 16 else (bar + 1) * plan["bar"], t0 + d * plan["spb"] / 4)
            chord = [c % 12 for c in chord_at(plan, t0)[3]]
            strong = s % 4 == 0
            cands = sorted(pitches, key=lambda q: abs(q - p) / leap * (0.6 if strong else 1.0)
                           + (0 if q % 12 in chord else (3 if strong else 1)) + rng.random() * 2.5)
            p = cands[0]
            notes.append((t0, t1 - 0.02, int(p), words[k % len(words)], float(rng.uniform(0.7, 1.0))))
            k += 1
    return notes


def harmony_notes(rng, plan, notes, interval):
    """A diatonic harmony: each note moved `interval` scale steps (2 = a third up, -2 a third
    down, 5 = a sixth up, 7 = an octave), only in the bars where the harmony part is active."""
    pitches = scale_pitches(plan["key"], plan["scale"], 30, 100)
    out = []
    for t0, t1, p, w, v in notes:
        if not active(plan, "harmony", t0):
            continue
        i = min(range(len(pitches)), key=lambda j: abs(pitches[j] - p))
        out.append((t0, t1, pitches[int(np.clip(i + interval, 0, len(pitches) - 1))], w, v * 0.8))
    return out


def sing_line(singer, notes, n, rng, timing_sd=0.0, glide_p=0.0):
    """Render sung notes into a mono (n,) array; legato notes get portamento."""
    dry = np.zeros(n + 44100, np.float32)
    prev_end, prev_hz = -1.0, None
    for t0, t1, p, w, vel in notes:
        legato = (t0 - prev_end) < 0.06
        glide = float(rng.choice([-2, -1, 1, 2])) if rng.random() < glide_p else None
        y, pre = singer.sing(w, p, t1 - t0, prev_hz if legato else None, vel, glide)
        i0 = int(round((t0 - pre + rng.normal(0, timing_sd)) * fx.SR))
        if i0 < 0:
            y, i0 = y[-i0:], 0
        if i0 < len(dry):
            L = min(len(y), len(dry) - i0)
            dry[i0:i0 + L] += y[:L]
        prev_end, prev_hz = t1, 440.0 * 2 ** ((p - 69) / 12)
    return dry[:n]


def breaths(rng, notes, n, level):
    """Band-passed noise breaths (~0.25 s) before phrases (gaps > 0.4 s), mono (n,)."""
    out = np.zeros(n, np.float32)
    prev_end = -1.0
    for t0, t1, *_ in notes:
        if t0 - prev_end > 0.4 and rng.random() < 0.8:
            L = int(rng.uniform(0.15, 0.35) * fx.SR)
            i0 = int((t0 - 0.05) * fx.SR) - L
            if i0 >= 0 and i0 + L <= n:                              # (a breath must fit the song)
                env = np.sin(np.linspace(0, np.pi, L)) ** 2
                out[i0:i0 + L] += (rng.normal(0, 1, L) * env).astype(np.float32)
        prev_end = t1
    lo = float(rng.uniform(600, 1500))
    out = fx.eq(out, [("highpass", lo, 0, 0.7), ("lowpass", lo * 6, 0, 0.7)])
    return out * level / (np.abs(out).max() + 1e-9)


def vocal_chain(rng, x, n):
    """Producer's vocal chain on a stereo (n, 2) signal: EQ, compression, optional saturation,
    optional delay, reverb, a level ride. Returns (audio, settings)."""
    bands = fx.random_eq(rng, hp_range=(70, 160), n_peaks=2, max_db=5.0)
    bands.append(("peak", float(rng.uniform(2500, 5000)), float(rng.uniform(1, 6)), 1.0))   # presence
    y = fx.eq(x, bands)
    thr, ratio = float(rng.uniform(-24, -10)), float(rng.uniform(2, 6))
    y = fx.compress(y, thr, ratio)
    info = dict(comp_thr_db=thr, comp_ratio=ratio)
    if rng.random() < 0.35:
        info["saturation"] = float(rng.uniform(1.5, 4))
        y = fx.saturate(y, info["saturation"], str(rng.choice(["tanh", "asym"])), mix=float(rng.uniform(0.3, 1)))
    if rng.random() < 0.4:
        info["delay_s"] = float(rng.choice([0.09, 0.12, 0.25, 0.375, 0.5]) * rng.uniform(0.9, 1.1))
        y = fx.delay(y, info["delay_s"], float(rng.uniform(0.15, 0.5)), float(rng.uniform(0.1, 0.35)),
                     ping_pong=bool(rng.random() < 0.5))
    info["reverb"] = str(rng.choice(["plate", "hall", "room"]))
    info["reverb_rt60"] = float(rng.uniform(0.5, 3.0))
    info["reverb_wet"] = float(rng.uniform(0.05, 0.35))
    ir = fx.reverb_ir(rng, info["reverb_rt60"], float(rng.uniform(0.0, 0.08)), float(rng.uniform(3000, 10000)),
                      info["reverb"])
    y = fx.reverb(y, ir, info["reverb_wet"])
    return y, info


def vocal_stem(rng, plan, n, tmpdir, density_choices, voice_rng=None, festival_p=0.0):
    """(stem (n, 2), lead notes, info). Silent (zeros) for instrumental songs.

    An English (or vocalise) song is sung by a Festival voice of the singer's gender with
    probability festival_p, drawn from voice_rng only: festival_p = 0 gives the songs of the
    generator before Festival voices."""
    if plan["instrumental"] or not any(plan["active"]["vocals"]):
        return np.zeros((n, 2), np.float32), [], dict(instrumental=True)
    lang = pick(rng, LANG_WEIGHTS)
    allv = voices()
    gender = "F" if rng.random() < 0.5 else "M"            # espeak-ng's variants are mostly male:
    pool = [v for v in allv if v[1] == gender] or list(allv)  # draw the register's gender first
    voice = pool[int(rng.integers(0, len(pool)))][0]
    espeak_lang = "en-us" if lang == "vocalise" else lang
    style = draw_style(rng)
    register = int(rng.integers(-5, 6))                    # register: where the melody sits
    lo, hi = (55, 77) if gender == "F" else (45, 67)
    density = str(rng.choice(density_choices))
    words = [str(w) for w in rng.choice(LYRICS[lang].split(), size=32)]
    notes = make_melody(rng, plan, lo + register, hi + register - (8 if density == "rap" else 0), density, words)
    engine = "espeak"
    fest = [v for v, g in festival_voices() if g == gender] if lang in FESTIVAL_LANGS else []
    if fest and festival_p > 0 and voice_rng.random() < festival_p:
        voice, engine = fest[int(voice_rng.integers(0, len(fest)))], "festival"
    singer = Singer(rng, voice, espeak_lang, style, tmpdir, engine=engine)
    if engine == "festival":
        singer.festival(words)                             # one Festival process for all the lyrics
    lead = sing_line(singer, notes, n, rng, glide_p=style["glide_p"])
    st = np.stack([lead, lead], axis=1)
    info = dict(language=lang, voice=voice, engine=engine, gender=gender, density=density, register=register, n_notes=len(notes),
                pitch_lo=min((p for _, _, p, _, _ in notes), default=0), pitch_hi=max((p for _, _, p, _, _ in notes), default=0),
                **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in style.items()})
    if rng.random() < 0.35:                                # double-tracked lead, panned
        double = sing_line(singer, notes, n, rng, timing_sd=0.012)
        side = float(rng.choice([-1, 1]))
        st += fx.pan(0.5 * double, side * float(rng.uniform(0.3, 0.9)))
        info["doubled"] = True
    if any(plan["active"]["harmony"]):
        interval = int(rng.choice([2, -2, 5, -3, 7]))
        hstyle = dict(style, formant=style["formant"] * float(rng.uniform(0.95, 1.08)), vib_depth=style["vib_depth"] * 0.7)
        if rng.random() < 0.4:                             # another espeak-ng voice, or the lead's
            hvoice, hengine = allv[int(rng.integers(0, len(allv)))][0], "espeak"
        else:
            hvoice, hengine = voice, engine
        hsinger = Singer(rng, hvoice, espeak_lang, hstyle, tmpdir, engine=hengine)
        hn = harmony_notes(rng, plan, notes, interval)
        harm = sing_line(hsinger, hn, n, rng, timing_sd=0.008)
        wide = fx.width(fx.haas_double(harm * float(rng.uniform(0.35, 0.7)), float(rng.uniform(0.008, 0.02)), 0.7),
                        float(rng.uniform(1.0, 1.6)))
        st += wide
        info["harmony_interval_steps"] = interval
        info["n_harmony_notes"] = len(hn)
    if rng.random() < 0.6:
        info["breath_level"] = float(rng.uniform(0.02, 0.12))
        st += fx.pan(breaths(rng, notes, n, info["breath_level"] * (np.abs(lead).max() + 1e-9)), 0.0)
    y, chain = vocal_chain(rng, st, n)
    info.update(chain)
    return y, notes, info
