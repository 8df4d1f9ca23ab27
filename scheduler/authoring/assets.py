"""Assets (Airflow 2's datasets): data-aware scheduling.

A task names the assets it updates in ``outlets=[Asset("s3://bucket/key")]``; each
successful try of it records an asset event. A DAG with ``schedule=[a, b]`` (all of
them), ``schedule=a | b`` (any), ``schedule=(a | b) & c`` or
``schedule=AssetOrTimeSchedule(timetable=..., assets=...)`` (its timetable's runs
*and* a run whenever its assets condition holds) gets an ``asset_triggered`` run once
every asset its condition needs has been updated since its last such run.

Pure: the condition is plain data (:meth:`AssetCondition.serialize`); the database side
is :mod:`scheduler.db.assets`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from scheduler.exceptions import DagDefinitionError, ScheduleError
from scheduler.timetables.base import Timetable
from scheduler.timetables.simple import NullTimetable

MAX_URI_LENGTH = 3000


class AssetCondition:
    """``a | b`` (any) and ``a & b`` (all) of assets."""

    def __or__(self, other: Any) -> AssetAny:
        return AssetAny(self, _condition(other))

    def __and__(self, other: Any) -> AssetAll:
        return AssetAll(self, _condition(other))

    def uris(self) -> list[str]:
        raise NotImplementedError

    def serialize(self) -> dict[str, Any]:
        raise NotImplementedError

    def evaluate(self, updated: set[str]) -> bool:
        raise NotImplementedError


class Asset(AssetCondition):
    """One piece of data, named by a URI (``s3://bucket/key``, ``file:///data/x.csv``, ``postgres://db/table``)."""

    def __init__(self, uri: str, extra: Mapping[str, Any] | None = None, *, name: str | None = None,
                 group: str = "asset") -> None:
        if not isinstance(uri, str) or not uri.strip():
            raise DagDefinitionError(f"an asset URI must be a non-empty string, got {uri!r}")
        if len(uri) > MAX_URI_LENGTH:
            raise DagDefinitionError(f"asset URI {uri[:40]!r}... is longer than {MAX_URI_LENGTH} characters")
        if uri != uri.strip() or any(c in uri for c in "\n\r\t"):
            raise DagDefinitionError(f"asset URI {uri!r} must not contain surrounding spaces or control characters")
        if uri.split(":", 1)[0].lower() == "airflow":
            raise DagDefinitionError(f"asset URI {uri!r}: the 'airflow' scheme is reserved")
        if extra is not None and not isinstance(extra, Mapping):
            raise DagDefinitionError(f"asset {uri!r}: extra must be a dict, got {type(extra).__name__}")
        self.uri = uri
        self.name = name or uri
        self.group = group
        self.extra = dict(extra or {})

    def uris(self) -> list[str]:
        return [self.uri]

    def serialize(self) -> dict[str, Any]:
        return {"type": "asset", "uri": self.uri}

    def evaluate(self, updated: set[str]) -> bool:
        return self.uri in updated

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Asset) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __repr__(self) -> str:
        return f"Asset({self.uri!r})"


class _Combined(AssetCondition):
    kind = ""

    def __init__(self, *objects: Any) -> None:
        if not objects:
            raise DagDefinitionError(f"{type(self).__name__} needs at least one asset")
        self.objects = [_condition(o) for o in objects]

    def uris(self) -> list[str]:
        return list(dict.fromkeys(u for o in self.objects for u in o.uris()))

    def serialize(self) -> dict[str, Any]:
        return {"type": self.kind, "objects": [o.serialize() for o in self.objects]}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.objects))})"


class AssetAll(_Combined):
    """Every one of the assets (the meaning of a list)."""

    kind = "all"

    def evaluate(self, updated: set[str]) -> bool:
        return all(o.evaluate(updated) for o in self.objects)


class AssetAny(_Combined):
    """Any one of the assets."""

    kind = "any"

    def evaluate(self, updated: set[str]) -> bool:
        return any(o.evaluate(updated) for o in self.objects)


def _condition(value: Any) -> AssetCondition:
    if isinstance(value, AssetCondition):
        return value
    raise DagDefinitionError(f"expected an Asset (or a combination of assets), got {value!r}")


def evaluate_condition(data: Mapping[str, Any], updated: set[str]) -> bool:
    """:meth:`AssetCondition.evaluate` on the serialized form (what the scheduler holds)."""
    kind = data.get("type")
    if kind == "asset":
        return data.get("uri") in updated
    objects = data.get("objects") or []
    if kind == "all":
        return all(evaluate_condition(o, updated) for o in objects)
    if kind == "any":
        return any(evaluate_condition(o, updated) for o in objects)
    return False


def condition_uris(data: Mapping[str, Any]) -> list[str]:
    if data.get("type") == "asset":
        return [str(data["uri"])]
    return list(dict.fromkeys(u for o in data.get("objects") or [] for u in condition_uris(o)))


class AssetTriggeredTimetable(NullTimetable):
    """No runs by time: the DAG runs when its assets are updated."""

    summary = "Asset"  # type: ignore[assignment]
    description = "Triggered by asset updates"


class AssetOrTimeSchedule:
    """``schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable(...), assets=[...])``: both kinds of runs."""

    def __init__(self, *, timetable: Timetable | str, assets: Any) -> None:
        self.timetable = timetable
        self.assets = as_condition(assets)
        if self.assets is None:
            raise DagDefinitionError("AssetOrTimeSchedule needs assets")


DatasetOrTimeSchedule = AssetOrTimeSchedule


def as_condition(schedule: Any) -> AssetCondition | None:
    """The asset condition a ``schedule`` value stands for (None: it is not asset-based)."""
    if isinstance(schedule, AssetCondition):
        return schedule
    if isinstance(schedule, list | tuple) and schedule and all(isinstance(s, AssetCondition) for s in schedule):
        return schedule[0] if len(schedule) == 1 else AssetAll(*schedule)
    if isinstance(schedule, list | tuple) and any(isinstance(s, AssetCondition) for s in schedule):
        raise ScheduleError(f"schedule {schedule!r}: a list schedule must hold only assets")
    return None


def split_schedule(schedule: Any) -> tuple[Any, AssetCondition | None]:
    """``(time-based schedule, asset condition)`` for a DAG's ``schedule`` argument."""
    if isinstance(schedule, AssetOrTimeSchedule):
        return schedule.timetable, schedule.assets
    condition = as_condition(schedule)
    if condition is not None:
        return AssetTriggeredTimetable(), condition
    return schedule, None


def outlet_uris(outlets: Iterable[Any]) -> list[str]:
    """The asset URIs among a task's outlets (other objects are kept for lineage, not scheduled on)."""
    return [o.uri for o in outlets if isinstance(o, Asset)]
