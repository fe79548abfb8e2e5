"""Property: whichever subset of the four sources sets a key, the latest one wins and is named."""

from __future__ import annotations

import tempfile
from pathlib import Path

from foundation_config import load_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

KEYS = ("max_attempts", "pool")
SECTION_OF = {"max_attempts": "retry", "pool": "db"}
DEFAULTS = {"max_attempts": 3, "pool": 5}
LAYERS = ("file", "env", "set")  # in precedence order, after the defaults


# `sections` is a constant mapping, so sharing it across examples is safe.
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(KEYS), st.sets(st.sampled_from(LAYERS))))
def test_latest_source_wins(sections, setters):
    toml: list[str] = []
    environ: dict[str, str] = {}
    overrides: list[str] = []
    for key, layers in setters.items():
        section = SECTION_OF[key]
        for rank, layer in enumerate(LAYERS):  # a distinct value per layer: 10, 11, 12
            if layer not in layers:
                continue
            if layer == "file":
                toml.append(f"[{section}]\n{key} = {10 + rank}\n")
            elif layer == "env":
                environ[f"FOUNDATION_{section.upper()}__{key.upper()}"] = str(10 + rank)
            else:
                overrides.append(f"{section}.{key}={10 + rank}")
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "settings.toml").write_text("".join(toml))
        config = load_config(sections, overrides=overrides, environ=environ, cwd=tmp)
    for key in KEYS:
        section = SECTION_OF[key]
        layers = setters.get(key, set())
        winner = max(layers, key=LAYERS.index) if layers else None
        expected = DEFAULTS[key] if winner is None else 10 + LAYERS.index(winner)
        assert config.value(f"{section}.{key}") == expected
        source = config.sources[f"{section}.{key}"]
        assert (
            source
            == {
                None: "default",
                "file": f"settings.toml:{section}.{key}",
                "env": f"env FOUNDATION_{section.upper()}__{key.upper()}",
                "set": "--set",
            }[winner]
        )
