"""After loading, nothing in the configuration can be changed."""

from __future__ import annotations

import attrs
import pytest
from foundation_config import load_config


def test_config_sections_and_values_refuse_mutation(load, write):
    write("settings.toml", "[retry]\ncodes = [500]\n[retry.labels]\nteam = 'ml'\n")
    config = load()
    retry = config["retry"]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.sections = {}  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.sections["retry"] = None  # type: ignore[index]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.sources["retry.name"] = "x"  # type: ignore[index]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        retry.max_attempts = 10
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        retry.labels["team"] = "infra"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        retry.labels.update(zone="b")
    assert retry.labels == {"team": "ml"}
    assert isinstance(retry.codes, tuple)


def test_list_values_refuse_mutation(tmp_path):
    @attrs.frozen
    class Hosts:
        names: list[str] = attrs.field(factory=lambda: ["a"])

    config = load_config({"hosts": Hosts}, overrides=["hosts.names=['x', 'y']"], cwd=tmp_path)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config["hosts"].names.append("z")
    assert config["hosts"].names == ["x", "y"]


def test_a_section_class_that_is_not_frozen_is_warned_about(tmp_path):
    @attrs.define
    class Loose:
        value: int = 1

    with pytest.warns(UserWarning, match="not a frozen attrs class"):
        load_config({"loose": Loose}, cwd=tmp_path)


def test_in_place_union_is_refused_too(load):
    """dict's |= does not go through update(): it changed Config.sources."""
    config = load()
    sources, sections = config.sources, config.sections
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        sources |= {"retry.name": "forged"}  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        sections |= {"retry": None}  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config["retry"].labels |= {"team": "x"}
    assert (config.sources["retry.name"], config["retry"].max_attempts) == ("default", 3)


def test_set_values_are_frozen_into_frozensets(tmp_path):
    @attrs.frozen
    class Tags:
        names: set[str] = attrs.field(factory=set)

    config = load_config({"tags": Tags}, overrides=["tags.names=['a']"], cwd=tmp_path)
    assert config["tags"].names == frozenset({"a"})
    with pytest.raises(AttributeError):
        config["tags"].names.add("b")  # type: ignore[attr-defined]
