"""Sections are deep-frozen: with the config plugin and with the core's defaults alike."""

from __future__ import annotations

import attrs
import pytest

from foundation_core import SectionAdder, hookimpl, start
from foundation_core._freeze import FrozenDict, FrozenList, freeze_section
from foundation_core.errors import ConfigError


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


@attrs.frozen
class Anything:
    value: object = None


@attrs.define
class Mutable:
    items: list[object] = attrs.field(factory=list)


def _nested(depth: int) -> list[object]:
    outer: list[object] = []
    inner = outer
    for _ in range(depth - 1):
        inner.append([])
        inner = inner[0]  # type: ignore[assignment]
    return outer


def test_a_value_that_contains_itself_is_a_value_error_naming_where() -> None:
    """Freezing recursed into a cyclic value until RecursionError, naming nothing."""
    looped: dict[str, object] = {"hosts": []}
    looped["hosts"].append(looped)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"'net': the value at net\.value\['hosts'\]\[0\] contains itself"):
        freeze_section(Anything(looped), name="net")
    m = Mutable()
    m.items.append(m)
    with pytest.raises(ValueError, match=r"the value at net\.value\.items\[0\] contains itself"):
        freeze_section(Anything(m), name="net")


def test_containers_nested_deeper_than_the_limit_are_refused_and_up_to_it_frozen() -> None:
    from foundation_core._freeze import MAX_DEPTH

    deepest = freeze_section(Anything(_nested(MAX_DEPTH - 1)), name="deep").value
    assert isinstance(deepest, FrozenList)
    with pytest.raises(
        ValueError, match=rf"'deep': the value at deep\.value(\[0\])+ is nested more than {MAX_DEPTH}"
    ):
        freeze_section(Anything(_nested(5 * MAX_DEPTH)), name="deep")


def test_a_value_shared_by_two_fields_is_no_cycle() -> None:
    shared = [1, 2]
    frozen = freeze_section(Anything({"a": shared, "b": shared}), name="s").value
    assert frozen == {"a": [1, 2], "b": [1, 2]} and isinstance(frozen["b"], FrozenList)


def test_a_default_that_contains_itself_is_a_config_error_naming_the_section() -> None:
    looped: list[object] = []
    looped.append(looped)

    @attrs.frozen
    class Looped:
        value: list[object] = attrs.field(factory=lambda: looped)

    class Declares:
        @hookimpl
        def foundation_config_sections(self, add: SectionAdder) -> None:
            add("looped", Looped)

    with pytest.raises(ConfigError, match=r"looped: its defaults cannot be frozen: .* contains itself"):
        start([Declares()], entry_points=False, env={"FOUNDATION_PLUGINS": ""})
