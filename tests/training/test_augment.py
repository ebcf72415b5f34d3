"""unmix.training.augment: the reference's source augmentations and their composition."""
import numpy as np
import pytest

from unmix.errors import UnmixError
from unmix.training import augment


def test_gain_in_range_and_one_gain_per_call():
    audio = np.ones((2, 10), np.float32)
    gains = []
    for k in range(400):
        out = augment.augment_gain(audio, np.random.default_rng(k))
        assert np.all(out == out[0, 0]) and out.dtype == np.float32
        gains.append(out[0, 0])
    assert 0.25 <= min(gains) < 0.3 and 1.2 < max(gains) < 1.25


def test_channelswap_swaps_stereo_about_half_the_time():
    audio = np.stack([np.zeros(5), np.ones(5)]).astype(np.float32)
    swapped = 0
    for k in range(400):
        out = augment.augment_channelswap(audio, np.random.default_rng(k))
        assert np.array_equal(out, audio) or np.array_equal(out, audio[::-1])
        swapped += bool(out[0, 0] == 1)
    assert 150 < swapped < 250
    mono = np.ones((1, 5), np.float32)
    assert augment.augment_channelswap(mono, np.random.default_rng(0)) is mono


def test_make_augmentations_names_and_errors():
    aug = augment.make_augmentations(["gain", "channelswap"])
    assert aug.augmentations == [augment.augment_gain, augment.augment_channelswap]
    assert augment.make_augmentations(None).augmentations == []
    with pytest.raises(UnmixError, match="unknown source augmentation 'pitch'"):
        augment.make_augmentations(["pitch"])


def test_force_stereo_duplicates_mono_and_keeps_the_first_two_channels():
    mono = np.arange(4, dtype=np.float32)[None]
    np.testing.assert_array_equal(augment.augment_force_stereo(mono, np.random.default_rng(0)), np.repeat(mono, 2, 0))
    three = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(augment.augment_force_stereo(three, np.random.default_rng(0)), three[:2])


def test_compose_applies_in_order_and_names_its_parts():
    double = lambda audio, rng: audio * 2  # noqa: E731
    aug = augment.make_augmentations([double, "force_stereo"])
    out = aug(np.ones((1, 3), np.float32), np.random.default_rng(0))
    np.testing.assert_array_equal(out, np.full((2, 3), 2.0))
    assert repr(augment.make_augmentations(["gain"])) == "Compose([augment_gain])"
    assert augment.make_augmentations(aug) is aug
