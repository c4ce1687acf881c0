"""Each feature of a review beside the ranges of its model's manifest, in plain words: the
registry's real manifests, and the same through the API."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tandem_review_api.references import ManifestFeature, References, stand
from tandem_shared.events import FeatureValue, ModelRef
from tandem_shared.settings import KafkaSettings, default_models_dir
from tandem_shared.topics import Topics

from tests.review_api.test_api import auth, pending, publish_routed, routed

TUMOR = ModelRef(name="tumor_screening", version="1")
# tumor_screening/1's mean_radius: valid 2.58625 to 33.2148, deciles 10.302 to 19.4.
MEAN_RADIUS = [
    (14.2, "typical", "typical: like most training cases (10.302 to 19.4)"),
    (9.0, "low", "low: among the lowest 10% of training cases"),
    (19.4, "high", "high: among the highest 10% of training cases"),  # an edge: the bin above
    (40, "above_range", "above the range the model knows (2.58625 to 33.2148)"),
    (1.0, "below_range", "below the range the model knows (2.58625 to 33.2148)"),
    (True, "below_range", "below the range the model knows (2.58625 to 33.2148)"),  # 1, scored
    (None, "missing", "no value: the model scored a stand-in"),
    ("big", "unknown", "not a number: the model scored a stand-in"),
]


@pytest.fixture
def references() -> References:
    return References(default_models_dir())


@pytest.mark.parametrize(("value", "standing", "note"), MEAN_RADIUS)
def test_a_number_stands_in_the_deciles_and_valid_range_of_its_manifest(
    references: References, value: FeatureValue, standing: str, note: str
) -> None:
    [first, *_] = references.ranges(TUMOR, {"mean_radius": value}) or []
    assert (first.feature, first.standing, first.note) == ("mean_radius", standing, note)
    assert (first.valid, first.typical) == ((2.58625, 33.2148), (10.302, 19.4))


def test_every_feature_comes_in_the_model_s_order_then_those_it_does_not_read(
    references: References,
) -> None:
    ranges = references.ranges(TUMOR, {"mean_radius": 14.2, "shoe_size": 44}) or []
    assert len(ranges) == 31 and ranges[1].feature == "mean_texture"
    assert ranges[1].standing == "missing"  # absent from the task
    assert (ranges[-1].feature, ranges[-1].standing) == ("shoe_size", "unknown")
    assert ranges[-1].note == "the model does not read this feature"


def test_a_version_the_registry_lacks_has_no_ranges(tmp_path: Path) -> None:
    empty = References(tmp_path)
    assert empty.ranges(TUMOR, {"mean_radius": 14.2}) is None
    # A name from an event never reaches outside the registry's folder.
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "manifest.json").write_text('{"features": []}')
    assert empty.ranges(ModelRef(name="..", version="secret"), {}) is None
    assert empty.ranges(ModelRef(name="x/../..", version="secret"), {}) is None
    broken = tmp_path / "m" / "1"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{not json")
    assert empty.ranges(ModelRef(name="m", version="1"), {}) is None


def test_yes_no_and_categories_stand_by_their_share_of_training_cases() -> None:
    smoker = ManifestFeature.model_validate(
        {
            "name": "smoker",
            "type": "boolean",
            "reference": {"bin_edges": [0.5], "bin_fractions": [0.97, 0.03]},
        }
    )
    assert stand(smoker, True).note == "rare: 3% of training cases had true"
    assert (stand(smoker, False).standing, stand(smoker, False).note) == (
        "typical",
        "97% of training cases had false",
    )
    assert stand(smoker, 1).standing == "unknown"  # a number is not a yes/no
    site = ManifestFeature.model_validate(
        {
            "name": "site",
            "type": "categorical",
            "categories": ["east", "north", "west"],
            "reference": {"bin_edges": [0.5, 1.5], "bin_fractions": [0.6, 0.38, 0.02]},
        }
    )
    assert stand(site, "north").standing == "typical"
    assert stand(site, "west").note == "rare: 2% of training cases had 'west'"
    south = stand(site, "south")
    assert (south.standing, south.note) == (
        "unknown",
        "not a value the model knows (east, north, west)",
    )
    assert stand(site, None).standing == "missing"


@pytest.mark.kafka
async def test_a_review_read_in_full_shows_its_features_in_context(
    api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    odd = routed("r-odd")
    odd.task.features.update({"mean_radius": 40.0, "mean_texture": 9.0})
    plain = routed("r-unknown")
    retrained = plain.score.model_copy(
        update={"model": ModelRef(name="tumor_screening", version="99")}
    )
    unknown = plain.model_copy(update={"score": retrained})
    await publish_routed(kafka_settings, topics, [odd, unknown])
    items = {i["task_id"]: i for i in await pending(api, 2)}
    assert "feature_ranges" not in items["r-odd"]  # the list stays light
    alice = auth("alice", "reviewer")
    review = (await api.get(f"/v1/reviews/{items['r-odd']['review_id']}", headers=alice)).json()
    by_name = {r["feature"]: r for r in review["feature_ranges"]}
    assert by_name["mean_radius"]["standing"] == "above_range"
    assert by_name["mean_radius"]["valid"] == [2.58625, 33.2148]
    assert by_name["mean_texture"]["note"] == "low: among the lowest 10% of training cases"
    lacking = (
        await api.get(f"/v1/reviews/{items['r-unknown']['review_id']}", headers=alice)
    ).json()
    assert lacking["feature_ranges"] is None and lacking["features"] == {"mean_radius": 14.2}
