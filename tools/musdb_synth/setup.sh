#!/usr/bin/env bash
# Recipe for the project's synthetic-song generator on Debian 12 (bookworm), run as root.
# Everything comes from the Debian archive and PyPI; nothing else is downloaded.
#   apt (about 700 MiB installed): fluidsynth 2.3.1; GM soundfonts fluid-soundfont-gm (FluidR3_GM.sf2),
#     timgm6mb-soundfont, musescore-general-soundfont (MuseScore_General.sf3), fluidr3mono-gm-soundfont;
#     drum kits hydrogen-data + hydrogen-drumkits (Hydrogen sample kits), avldrums.lv2-soundfont
#     (Black Pearl / Red Zeppelin drum soundfonts); espeak-ng 1.51 (voices and languages); festival 2.5 with
#     three recorded-speaker English voices (festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts).
#   pip, in $VENV (default ~/.venvs/musdb-synth): numpy scipy soundfile pretty_midi pyworld-prebuilt
#     (import name pyworld; `pyworld` itself is sdist-only and needs g++), matplotlib (spectrogram PNGs).
set -euo pipefail
VENV=${VENV:-$HOME/.venvs/musdb-synth}
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends fluidsynth fluid-soundfont-gm timgm6mb-soundfont \
    musescore-general-soundfont fluidr3mono-gm-soundfont hydrogen-data hydrogen-drumkits \
    avldrums.lv2-soundfont espeak-ng festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q numpy scipy soundfile pretty_midi pyworld-prebuilt matplotlib
# tested: Python 3.11.7, numpy 2.4.6, scipy 1.17.1, soundfile 0.14.0, pretty_midi 0.2.11.post0 (mido 1.3.3),
#         pyworld-prebuilt 0.3.6.post1, matplotlib 3.11.2
