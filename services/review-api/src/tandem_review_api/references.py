"""Each feature of a review beside what the model saw in training, in plain words.

The model's manifest gives every feature a valid range (what the model scores as it is; the
scoring service flags and clamps values outside it) and reference bins: the deciles of the
training values for a number, the share of each value for a yes/no or a category. A value is
*typical* in the middle 80% of training cases, *low* or *high* in either tail of 10%, *below*
or *above* the valid range outside it, and *rare* when fewer than 5% of training cases had it.

The manifests are read from the model registry the scoring service serves
(``NAME/VERSION/manifest.json``, the same folder or volume, read-only), only the parts of the
published format (docs/schemas/model-manifest.json) a reviewer needs. A version the registry
does not hold yet shows its values without ranges.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tandem_shared.events import FeatureValue, ModelRef

log = logging.getLogger(__name__)

RARE = 0.05  # a yes/no or category value fewer training cases had is called rare
# Registry folder names: a model reference from an event never names a path outside it.
_FOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

Standing = Literal[
    "typical", "low", "high", "below_range", "above_range", "rare", "unknown", "missing"
]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Reference(_Lenient):
    bin_edges: list[float]
    bin_fractions: list[float]


class ManifestFeature(_Lenient):
    """One feature of a manifest, as far as a reviewer needs it."""

    name: str
    order: int = 0
    type: Literal["numeric", "boolean", "categorical"]
    min: float | None = None
    max: float | None = None
    categories: list[str] = Field(default_factory=list)
    reference: _Reference | None = None


class _Manifest(_Lenient):
    features: list[ManifestFeature]


class FeatureRange(BaseModel):
    """One feature of a review: its value, the model's ranges, and where the value stands."""

    feature: str
    value: FeatureValue
    valid: tuple[float, float] | None  # the range the model scores as it is
    typical: tuple[float, float] | None  # where the middle 80% of training cases lie
    standing: Standing
    note: str  # the standing in plain words


def _pct(share: float) -> str:
    return f"{100 * share:.0f}%"


def stand(spec: ManifestFeature, value: FeatureValue) -> FeatureRange:
    """Where ``value`` stands among the training cases of ``spec``."""
    if spec.type == "numeric":
        return _numeric(spec, value)
    if spec.type == "boolean":  # binned false, true
        index = int(value) if type(value) is bool else None
        return _share_of(spec, value, index, "true" if value is True else "false")
    index = spec.categories.index(value) if value in spec.categories else None
    return _share_of(spec, value, index, repr(value))


def _numeric(spec: ManifestFeature, value: FeatureValue) -> FeatureRange:
    valid = (spec.min, spec.max) if spec.min is not None and spec.max is not None else None
    edges = spec.reference.bin_edges if spec.reference and spec.reference.bin_edges else None
    typical = (edges[0], edges[-1]) if edges else None
    fractions = spec.reference.bin_fractions if edges and spec.reference else []

    def at(standing: Standing, note: str) -> FeatureRange:
        return FeatureRange(
            feature=spec.name,
            value=value,
            valid=valid,
            typical=typical,
            standing=standing,
            note=note,
        )

    if value is None:
        return at("missing", "no value: the model scored a stand-in")
    if not isinstance(value, int | float):  # as the scoring service reads it: true is 1
        return at("unknown", "not a number: the model scored a stand-in")
    number = float(value)
    if valid is not None and not valid[0] <= number <= valid[1]:
        side = "below" if number < valid[0] else "above"
        return at(
            f"{side}_range",  # type: ignore[arg-type]
            f"{side} the range the model knows ({valid[0]:g} to {valid[1]:g})",
        )
    if typical is None:
        return at("typical", "within the range the model knows")
    # A value equal to an edge falls in the bin above it, as the manifest's bins were made.
    if number < typical[0]:
        return at("low", f"low: among the lowest {_pct(fractions[0])} of training cases")
    if number >= typical[1]:
        return at("high", f"high: among the highest {_pct(fractions[-1])} of training cases")
    return at("typical", f"typical: like most training cases ({typical[0]:g} to {typical[1]:g})")


def _share_of(
    spec: ManifestFeature, value: FeatureValue, index: int | None, said: str
) -> FeatureRange:
    """A yes/no or a category: ``index``, the value's bin (None: not a value it knows)."""

    def at(standing: Standing, note: str) -> FeatureRange:
        return unranged(spec.name, value, standing, note)

    if value is None:
        return at("missing", "no value: the model scored a stand-in")
    if index is None:
        choices = ", ".join(spec.categories) if spec.type == "categorical" else "true, false"
        return at("unknown", f"not a value the model knows ({choices})")
    fractions = spec.reference.bin_fractions if spec.reference else []
    if index >= len(fractions):
        return at("typical", "a value the model knows")
    share = fractions[index]
    if share < RARE:
        return at("rare", f"rare: {_pct(share)} of training cases had {said}")
    return at("typical", f"{_pct(share)} of training cases had {said}")


def unranged(name: str, value: FeatureValue, standing: Standing, note: str) -> FeatureRange:
    return FeatureRange(
        feature=name, value=value, valid=None, typical=None, standing=standing, note=note
    )


class References:
    """The features of every model version the registry holds, read once per version."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self._read: dict[tuple[str, str], list[ManifestFeature]] = {}

    def features(self, model: ModelRef) -> list[ManifestFeature] | None:
        """The version's features, or None when the registry holds no readable manifest of
        it (asked again next time: retraining adds versions)."""
        key = (model.name, model.version)
        if key in self._read:
            return self._read[key]
        if not (_FOLDER.match(model.name) and _FOLDER.match(model.version)):
            return None
        path = self.models_dir / model.name / model.version / "manifest.json"
        try:
            manifest = _Manifest.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError) as exc:
            log.warning("cannot read the manifest %s: %s", path, exc)
            return None
        # Versions are never rewritten in the registry: what was read stays true.
        self._read[key] = sorted(manifest.features, key=lambda f: f.order)
        return self._read[key]

    def ranges(
        self, model: ModelRef, values: Mapping[str, FeatureValue]
    ) -> list[FeatureRange] | None:
        """Each feature the model reads, in its order, then any other the task carried (as
        unknown); None when the version's manifest cannot be read."""
        specs = self.features(model)
        if specs is None:
            return None
        out = [stand(spec, values.get(spec.name)) for spec in specs]
        known = {spec.name for spec in specs}
        out.extend(
            unranged(name, value, "unknown", "the model does not read this feature")
            for name, value in values.items()
            if name not in known
        )
        return out
