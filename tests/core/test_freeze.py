"""Sections are deep-frozen: with the config plugin and with the core's defaults alike."""

from __future__ import annotations

import attrs
import pytest

from foundation_core import SectionAdder, hookimpl, start
from foundation_core._freeze import FrozenDict, FrozenList, freeze_section


@attrs.frozen
class Hosts:
    names: list[str] = attrs.field(factory=lambda: ["a", "b"])
    labels: dict[str, list[int]] = attrs.field(factory=lambda: {"ports": [80]})
    tags: set[str] = attrs.field(factory=lambda: {"x"})


class HostsSection:
    @hookimpl
    def foundation_config_sections(self, add: SectionAdder) -> None:
        add("hosts", Hosts)


def test_defaults_without_the_config_plugin_are_deep_frozen() -> None:
    """default_config froze the mapping of sections but left a section's list and dict values
    mutable: one component could change what every other one reads."""
    with start([HostsSection()], entry_points=False, env={"FOUNDATION_PLUGINS": ""}) as hub:
        assert hub.config is not None
        hosts = hub.config["hosts"]
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            hosts.names.append("c")
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            hosts.labels["ports"].append(443)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            hosts.labels |= {"new": []}
        assert hosts.tags == frozenset({"x"}) and isinstance(hosts.tags, frozenset)
        assert hosts.names == ["a", "b"] and hosts.labels == {"ports": [80]}


def test_freeze_section_keeps_values_equal_and_readable() -> None:
    section = freeze_section(Hosts(names=["z"], labels={"k": [1, 2]}))
    assert isinstance(section.names, FrozenList) and section.names == ["z"]
    assert isinstance(section.labels, FrozenDict) and section.labels["k"] == [1, 2]
    assert isinstance(section.names, list) and isinstance(section.labels, dict)  # still readable as such
    for change in (section.names.sort, section.names.clear, section.labels.clear):
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            change()
    assert freeze_section(section) is section  # freezing twice changes nothing


def test_a_mutable_section_class_is_warned_about_once_frozen() -> None:
    @attrs.define
    class Loose:
        value: list[int] = attrs.field(factory=list)

    with pytest.warns(UserWarning, match="'loose' .* is not a frozen attrs class"):
        section = freeze_section(Loose(), name="loose")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        section.value.append(1)
