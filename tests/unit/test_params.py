"""Param and ParamsDict: JSON Schema validation with messages naming the param."""

from __future__ import annotations

from datetime import datetime

import pytest

from scheduler import DAG, Param
from scheduler.authoring import dag as dag_module
from scheduler.authoring.params import NOTSET, ParamsDict
from scheduler.exceptions import DagDefinitionError, ParamValidationError


@pytest.fixture(autouse=True)
def _clean_registry():
    yield
    dag_module.reset_created_dags()


# --- Param -----------------------------------------------------------------------------------------------


def test_param_default_and_schema():
    p = Param(5, type="integer", minimum=1, maximum=10, description="how many")
    assert p.value == 5
    assert p.has_value
    assert p.description == "how many"
    assert p.schema == {"type": "integer", "minimum": 1, "maximum": 10, "description": "how many"}
    assert p.resolve(name="n") == 5


def test_param_without_default():
    p = Param(type="string")
    assert not p.has_value
    assert p.value is NOTSET
    with pytest.raises(ParamValidationError, match="param 'who': no value given and no default"):
        p.resolve(name="who")
    assert p.resolve("ann", name="who") == "ann"


def test_untyped_param_accepts_anything():
    for value in (1, "x", None, [1], {"a": 1}):
        assert Param(value).resolve(name="any") == value


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        (Param(1, type="integer"), "one", r"param 'p': 'one' is not of type 'integer'"),
        (Param("a", type="string"), 3, r"param 'p': 3 is not of type 'string'"),
        (Param(True, type="boolean"), "yes", r"param 'p': 'yes' is not of type 'boolean'"),
        (Param("a", enum=["a", "b"]), "c", r"param 'p': 'c' is not one of \['a', 'b'\]"),
        (Param(5, type="integer", minimum=1), 0, r"param 'p': 0 is less than the minimum of 1"),
        (Param(5, type="integer", maximum=10), 11, r"param 'p': 11 is greater than the maximum of 10"),
        (Param("ab", type="string", minLength=2), "a", r"param 'p': 'a' is too short"),
        (Param(None, type=["null", "integer"]), "x", r"param 'p': 'x' is not of type 'null', 'integer'"),
    ],
)
def test_invalid_values_are_rejected_with_a_message_naming_the_param(param, value, message):
    with pytest.raises(ParamValidationError, match=message):
        param.resolve(value, name="p")


@pytest.mark.parametrize(
    ("param", "value"),
    [
        (Param(1, type="integer"), 7),
        (Param("a", enum=["a", "b"]), "b"),
        (Param(5, type="integer", minimum=1, maximum=10), 10),
        (Param(None, type=["null", "integer"]), None),
        (Param(1.5, type="number"), 2),
        (Param([], type="array", items={"type": "integer"}), [1, 2]),
    ],
)
def test_valid_values_pass(param, value):
    assert param.resolve(value, name="p") == value


def test_nested_errors_name_the_path_inside_the_param():
    p = Param({"n": 1}, type="object", properties={"n": {"type": "integer"}})
    with pytest.raises(ParamValidationError, match=r"param 'cfg'\['n'\]: 'x' is not of type 'integer'"):
        p.resolve({"n": "x"}, name="cfg")


def test_invalid_schema_is_reported():
    with pytest.raises(ParamValidationError, match="param 'p': invalid schema"):
        Param(1, type="integr").resolve(name="p")


def test_param_default_cannot_be_a_param():
    with pytest.raises(TypeError, match="plain value"):
        Param(Param(1))


def test_param_dump_and_load_round_trip():
    for original in (Param(3, type="integer", minimum=1, description="n"), Param(type="string"), Param(None)):
        loaded = Param.load(original.dump())
        assert loaded.value == original.value
        assert loaded.has_value == original.has_value
        assert loaded.description == original.description
        assert loaded.schema == original.schema


# --- ParamsDict ------------------------------------------------------------------------------------------


def test_params_dict_wraps_plain_values_and_returns_values():
    pd = ParamsDict({"a": 1, "b": Param("x", type="string")})
    assert pd["a"] == 1 and pd["b"] == "x"
    assert isinstance(pd.get_param("a"), Param)
    assert pd.get_param("b").schema == {"type": "string"}
    assert len(pd) == 2 and list(pd) == ["a", "b"]
    pd["c"] = 3
    del pd["a"]
    assert dict(pd) == {"b": "x", "c": 3}


def test_params_dict_keys_must_be_strings():
    with pytest.raises(TypeError, match="param names must be strings"):
        ParamsDict({1: "x"})


def test_resolve_uses_defaults_and_conf_overrides_them():
    pd = ParamsDict({"n": Param(5, type="integer"), "who": "world"})
    assert pd.resolve() == {"n": 5, "who": "world"}
    assert pd.resolve(None) == {"n": 5, "who": "world"}
    assert pd.resolve({"n": 7}) == {"n": 7, "who": "world"}
    assert pd.resolve({"who": "ann", "extra": True}) == {"n": 5, "who": "ann", "extra": True}


def test_resolve_validates_conf_values_naming_dag_and_param():
    pd = ParamsDict({"n": Param(5, type="integer", minimum=1)})
    with pytest.raises(
        ParamValidationError, match=r"^DAG 'etl': param 'n': 0 is less than the minimum of 1$"
    ):
        pd.resolve({"n": 0}, dag_id="etl")
    with pytest.raises(ParamValidationError, match=r"^param 'n': 'x' is not of type 'integer'$"):
        pd.resolve({"n": "x"})


def test_resolve_requires_a_value_for_params_without_default():
    pd = ParamsDict({"needed": Param(type="string")})
    with pytest.raises(ParamValidationError, match="param 'needed': no value given and no default"):
        pd.resolve({})
    assert pd.resolve({"needed": "ok"}) == {"needed": "ok"}


def test_resolve_does_not_change_defaults():
    pd = ParamsDict({"n": 1})
    pd.resolve({"n": 2})
    assert pd["n"] == 1


def test_merged_and_copy_are_independent():
    base = ParamsDict({"a": Param([1], type="array"), "b": 2})
    merged = base.merged({"b": 3, "c": Param(4, type="integer")})
    assert dict(merged) == {"a": [1], "b": 3, "c": 4}
    merged["a"].append(2)
    assert base["a"] == [1]
    assert dict(base) == {"a": [1], "b": 2}
    assert dict(base.merged(None)) == dict(base)
    assert dict(base.merged(ParamsDict({"b": 9}))) == {"a": [1], "b": 9}


def test_params_dict_dump_and_load():
    pd = ParamsDict({"n": Param(5, type="integer"), "free": Param(type="string")})
    loaded = ParamsDict.load(pd.dump())
    assert loaded["n"] == 5 and not loaded.get_param("free").has_value
    assert loaded.get_param("n").schema == {"type": "integer"}


# --- params on a DAG -----------------------------------------------------------------------------------------


def test_dag_params_resolve_with_conf():
    d = DAG("p", schedule=None, params={"n": Param(5, type="integer"), "who": "world"})
    assert d.resolve_params(None) == {"n": 5, "who": "world"}
    assert d.resolve_params({"n": 9}) == {"n": 9, "who": "world"}
    with pytest.raises(ParamValidationError, match="DAG 'p': param 'n'"):
        d.resolve_params({"n": "nine"})


def test_dag_rejects_an_invalid_param_default_naming_dag_and_param():
    with pytest.raises(
        DagDefinitionError, match=r"DAG 'p': invalid default: param 'n': 0 is less than the minimum of 1"
    ):
        DAG("p", schedule=None, params={"n": Param(0, type="integer", minimum=1)})


def test_param_without_default_is_fine_for_a_manual_dag():
    d = DAG("p", schedule=None, params={"who": Param(type="string")})
    assert not d.params.get_param("who").has_value


def test_param_without_default_on_a_scheduled_dag_is_an_error():
    with pytest.raises(DagDefinitionError, match=r"DAG 'p': param 'who' has no default.*schedule=None"):
        DAG("p", schedule="@daily", start_date=datetime(2024, 1, 1), params={"who": Param(type="string")})


def test_param_none_default_counts_as_a_default():
    d = DAG(
        "p",
        schedule="@daily",
        start_date=datetime(2024, 1, 1),
        params={"x": Param(None, type=["null", "string"])},
    )
    assert d.resolve_params({}) == {"x": None}


def test_params_dict_built_from_another_keeps_the_schemas():
    original = ParamsDict({"n": Param(5, type="integer", minimum=1)})
    again = ParamsDict(original)
    assert again.get_param("n").schema == {"type": "integer", "minimum": 1}
    d = DAG("p", schedule=None, params=original)
    with pytest.raises(ParamValidationError, match="param 'n'"):
        d.resolve_params({"n": 0})


def test_param_default_must_be_json_naming_dag_and_param():
    with pytest.raises(
        DagDefinitionError, match=r"DAG 'p': the default of param 'when' must be JSON-serialisable"
    ):
        DAG("p", schedule=None, params={"when": datetime(2024, 1, 1)})
