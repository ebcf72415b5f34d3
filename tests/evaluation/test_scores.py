"""Scores: which targets museval scores, one track's scores as museval's, silent sources named,
the median-of-medians table and the published SDRs beside it."""
import musdb
import museval
import numpy as np
import pandas as pd
import pytest
from hq_tracks import RATE, assert_same_scores, write_hq

from unmix.errors import UnmixError
from unmix.evaluation import scores
from unmix.io.musdb import find_tracks, load_track


def test_scored_targets_follow_eval_mus_track():
    assert scores.scored_targets(["drums", "vocals"]) == ["vocals", "drums"]  # musdb's order
    assert scores.scored_targets(["vocals", "drums", "bass", "other"]) == ["vocals", "drums", "bass", "other"]
    assert scores.scored_targets(["vocals", "accompaniment"]) == ["vocals", "accompaniment"]
    assert scores.scored_targets(["vocals", "drums", "bass", "accompaniment"]) == \
        ["drums", "bass", "vocals", "accompaniment"]
    assert scores.scored_targets(["vocals"]) == []
    assert scores.scored_targets(["vocals", "karaoke"]) == []


def test_score_track_scores_vocals_accompaniment_as_eval_mus_track(tmp_path):
    """With vocals and accompaniment, museval scores that pair on its own: the same JSON."""
    write_hq(tmp_path, ".wav", names=("Delta - Pair",), seconds=1.0)
    track = musdb.DB(root=str(tmp_path), subsets="test", is_wav=True)[0]
    mixture, sources, rate = load_track(find_tracks(tmp_path, "test")[0])
    rng = np.random.default_rng(3)
    refs = scores.musdb_references(sources, ["vocals", "drums", "accompaniment"])
    estimates = {t: (a + 0.05 * rng.standard_normal(a.shape)).astype(np.float32) for t, a in refs.items()}
    ours = scores.score_track(track.name, refs, estimates, rate, scorer="museval")
    theirs = museval.eval_mus_track(track, {t: e.T for t, e in estimates.items()})
    assert ours.json == theirs.json
    assert_same_scores(scores.score_track(track.name, refs, estimates, rate).json, theirs.json)
    assert [t["name"] for t in ours.scores["targets"]] == ["drums", "vocals", "accompaniment"]


def test_a_silent_estimate_is_named():
    rng = np.random.default_rng(0)
    refs = {t: rng.standard_normal((2, RATE)) for t in ("vocals", "drums")}
    estimates = dict(refs, vocals=np.zeros((2, RATE)))
    for scorer in scores.SCORERS:
        with pytest.raises(UnmixError, match="^Song: the estimate of vocals is silent throughout"):
            scores.score_track("Song", refs, estimates, RATE, scorer=scorer)


def test_musdb18_test_tracks_are_the_50_of_the_test_set():
    assert len(scores.MUSDB18_TEST_TRACKS) == 50
    names = sorted(scores.MUSDB18_TEST_TRACKS)
    assert scores.is_musdb18_test(names) and not scores.is_musdb18_test(names[1:])


def test_aggregate_is_the_median_over_frames_then_over_tracks():
    """NaN frames (museval's value for silent frames) are skipped; targets come in musdb's order."""
    rows = [("A", "drums", m, t, v) for m in scores.METRICS for t, v in enumerate([1.0, 2.0, 9.0])]
    rows += [("B", "drums", m, t, v) for m in scores.METRICS for t, v in enumerate([3.0, np.nan, 5.0])]
    rows += [(n, "vocals", m, 0, 7.0) for n in "AB" for m in scores.METRICS]
    df = pd.DataFrame(rows, columns=["track", "target", "metric", "time", "score"])
    per_track, table = scores.aggregate(df)
    assert per_track.loc[("A", "drums"), "SDR"] == 2.0 and per_track.loc[("B", "drums"), "SDR"] == 4.0
    assert list(table.index) == ["vocals", "drums"] and list(table.columns) == list(scores.METRICS)
    assert table.loc["drums", "SDR"] == 3.0 and table.loc["vocals", "SAR"] == 7.0


def test_format_table_shows_the_published_sdrs_on_request():
    table = pd.DataFrame({m: [1.234, -2.0] for m in scores.METRICS}, index=["vocals", "drums"])
    plain = scores.format_table(table).splitlines()
    assert plain == ["| target | SDR | SIR | ISR | SAR |", "|---|---:|---:|---:|---:|",
                     "| vocals | 1.23 | 1.23 | 1.23 | 1.23 |", "| drums | -2.00 | -2.00 | -2.00 | -2.00 |"]
    published = scores.format_table(table, published=True).splitlines()
    assert published[0].endswith("| UMX SDR | UMXHQ SDR | UMXL SDR |")
    assert published[2].endswith("| 6.32 | 6.25 | 7.21 |")


def test_an_unwritable_file_is_one_line(tmp_path):
    with pytest.raises(UnmixError, match=f"^cannot write {tmp_path}: Is a directory$"):
        with scores.writing(tmp_path):
            raise IsADirectoryError(21, "Is a directory")
