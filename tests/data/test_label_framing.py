"""Label files carry their frames' window and offset; the HuBERT config takes them from the headers.

Older headers and fairseq .km files say neither: they load as before (label_window from the recipe or 400,
label_offset None: the labels taken as framed like the model's frames)."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_audio.data.config import DataConfig
from ssl_audio.data.labels import check_label_sets, load_labels, write_labels
from ssl_audio.data.manifest import Manifest
from ssl_audio.models.registry import FAMILIES, LabelShapes, ModelConfig, family_config
from ssl_audio.train.config import read_label_shapes
from tests.cluster.test_labels import LENGTHS, write_corpus

ROWS = [np.zeros(n // 320, dtype=np.int64) for n in LENGTHS]  # 50 Hz rows: 40, 55 and 33 labels


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return write_corpus(tmp_path_factory.mktemp("framing"), LENGTHS)


def test_header_framing_round_trips_and_older_files_say_none(manifest, tmp_path):
    ours = tmp_path / "whisper.labels"
    write_labels(ours, manifest, ROWS, k=4, rate=50, window=1040, offset=-520)
    labels = load_labels(ours, manifest)
    assert (labels.rate, labels.window, labels.offset) == (50.0, 1040, -520)
    old = tmp_path / "old.labels"
    write_labels(old, manifest, ROWS, k=4, rate=50)  # a header as written before it had the framing
    assert (load_labels(old, manifest).window, load_labels(old, manifest).offset) == (None, None)
    km = tmp_path / "train.km"
    write_labels(km, manifest, ROWS, k=4, rate=50, headerless=True, window=1040, offset=-520)
    assert (load_labels(km, manifest, rate=50).window, load_labels(km, manifest, rate=50).offset) == (None, None)
    bad = tmp_path / "bad.labels"
    write_labels(bad, manifest, ROWS, k=4, rate=50, window="1040")
    with pytest.raises(ValueError, match=r"bad\.labels:1: label header 'window' must be a positive integer"):
        load_labels(bad, manifest)


def test_label_shapes_carry_the_framing_and_sets_must_share_it(manifest, tmp_path):
    a, b, old = tmp_path / "a.labels", tmp_path / "b.labels", tmp_path / "old.labels"
    write_labels(a, manifest, ROWS, k=4, rate=50, window=1040, offset=-520)
    write_labels(b, manifest, ROWS, k=3, rate=50, window=400, offset=0)
    write_labels(old, manifest, ROWS, k=3, rate=50)
    shapes = read_label_shapes(DataConfig(train_labels=(str(old), str(a))))
    assert (shapes.num_classes, shapes.window, shapes.offset) == ((3, 4), 1040, -520)
    assert (read_label_shapes(DataConfig(train_labels=(str(old),))).window) is None
    with pytest.raises(ValueError, match=r"b\.labels: label frames with window 400, but .*a\.labels 1040"):
        check_label_sets([a, b])
    c = tmp_path / "c.labels"
    write_labels(c, manifest, ROWS, k=4, rate=50, window=1040, offset=0)
    with pytest.raises(ValueError, match=r"c\.labels: offset=0 but .*a\.labels has offset=-520"):
        check_label_sets([a], [c])


def resolved(config: dict, window: int | None, offset: int | None):  # noqa: ANN201
    model = ModelConfig(family="whisper", preset="tiny", config=config)
    shapes = LabelShapes(num_classes=(100,), rate=50.0, window=window, offset=offset)
    return family_config(FAMILIES["whisper"].resolve(model, lambda: shapes))


def test_the_config_takes_window_and_offset_from_the_headers():
    cfg = resolved({}, 1040, -520)  # labels from a Whisper layer: they map 1:1 onto its frames
    assert (cfg.label_window, cfg.label_offset, cfg.label_rate) == (1040, -520, 50.0)
    cfg = resolved({"label_window": 1040}, 1040, -520)  # a recipe's setting that agrees is fine
    assert (cfg.label_window, cfg.label_offset) == (1040, -520)
    cfg = resolved({"label_window": 1040}, None, None)  # older labels: the recipe's setting, as before
    assert (cfg.label_window, cfg.label_offset) == (1040, None)
    assert (resolved({}, None, None).label_window, resolved({}, None, None).label_offset) == (400, None)


def test_a_recipe_setting_that_contradicts_the_header_is_refused():
    with pytest.raises(ValueError, match=r"^model\.config\.label_window=1040, but the label headers say window 400"):
        resolved({"label_window": 1040}, 400, 0)
    with pytest.raises(ValueError, match=r"^model\.config\.label_offset=0, but the label headers say offset -520"):
        resolved({"label_offset": 0}, 1040, -520)
