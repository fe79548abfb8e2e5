"""Foundation's core: the hook contract, the plugin manager (hub), registries, config contract.

The public surface is re-exported here; each mechanism lives in one private module.
"""

from ._callables import is_coroutine_callable, refuse_generator
from ._cli import Command, CommandRegistrar
from ._clock import SYSTEM_CLOCK, Clock, SystemClock, VirtualClock, current_deadline
from ._config import SENSITIVE_KEYS, Config, SectionAdder, is_sensitive_key
from ._discovery import PluginInfo
from ._events import active_hub, emit, running_hubs
from ._hub import FoundationPluginWarning, Hub, start
from ._lazy import lazy_exports
from ._markers import ENTRY_POINT_GROUP, hookimpl, hookspec
from ._pipeline import ORDER as PIPELINE_ORDER
from ._pipeline import resilient
from ._registry import Registrar, Registry
from ._version import __version__

__all__ = [
    "ENTRY_POINT_GROUP",
    "SENSITIVE_KEYS",
    "PIPELINE_ORDER",
    "SYSTEM_CLOCK",
    "Clock",
    "Command",
    "CommandRegistrar",
    "Config",
    "FoundationPluginWarning",
    "Hub",
    "PluginInfo",
    "Registrar",
    "Registry",
    "SectionAdder",
    "SystemClock",
    "VirtualClock",
    "__version__",
    "active_hub",
    "current_deadline",
    "emit",
    "hookimpl",
    "hookspec",
    "is_coroutine_callable",
    "is_sensitive_key",
    "lazy_exports",
    "refuse_generator",
    "resilient",
    "running_hubs",
    "start",
]
