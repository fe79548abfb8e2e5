"""Isolating a plugin: guards around its hookimpls, and failing it alone when it breaks.

Every hookimpl a plugin registers runs inside :func:`guard` (or :func:`guard_wrapper` for a
wrapper hookimpl): it runs as its plugin (what it registers is credited to it), and an installed
plugin's error goes to :func:`fail`, which rolls back what the plugin registered, unregisters it
and reports it, so that the other plugins carry on. An application's own objects are never
isolated: their errors propagate. In strict mode every failure is fatal.
"""

from __future__ import annotations

import functools
import importlib
import os
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from . import _events
from ._registry import current_plugin
from .errors import ConfigError, PluginError

if TYPE_CHECKING:
    from ._discovery import PluginInfo
    from ._hub import Hub

__all__ = ["FoundationPluginWarning", "fail", "guard", "guard_wrapper", "raised_at"]


class FoundationPluginWarning(UserWarning):
    """A plugin failed and was isolated; the others carry on (see ``foundation plugins``)."""


_OURS = tuple(str(Path(m.__file__ or "").resolve().parent) + os.sep for m in (_events, pluggy, importlib))


def _plugin_frame(exc: BaseException) -> tuple[str, int, dict[str, Any]] | None:
    """Where in the plugin ``exc`` came from: the outermost frame of its traceback that is not
    the core's, pluggy's or the import machinery's (the hookimpl, or the module being imported)."""
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if not name.startswith("<frozen ") and not str(Path(name).resolve()).startswith(_OURS):
            return name, tb.tb_lineno, tb.tb_frame.f_globals
        tb = tb.tb_next
    return None


def raised_at(exc: BaseException) -> str:
    """`` (at FILE:LINE)``: the plugin's line ``exc`` came from, for a message that names only
    the exception (the CLI prints a failed plugin's error on one line, without its traceback);
    ``""`` when the plugin has no line in it (its module not found)."""
    where = _plugin_frame(exc)
    return f" (at {where[0]}:{where[1]})" if where else ""


def _warn_from_plugin(message: str, exc: BaseException, stacklevel: int) -> None:
    """Warn ``message`` from the plugin's line that raised ``exc``, not from the core's or
    pluggy's caller (which ``stacklevel`` reaches: the plugin's frames are gone from the stack);
    from ``stacklevel`` when the plugin has no line in it (a requirement not met)."""
    where = _plugin_frame(exc)
    if where is None:
        warnings.warn(message, FoundationPluginWarning, stacklevel=stacklevel + 1)
        return
    filename, lineno, module_globals = where
    warnings.warn_explicit(
        message,
        FoundationPluginWarning,
        filename,
        lineno,
        module=module_globals.get("__name__"),
        registry=module_globals.setdefault("__warningregistry__", {}),
        module_globals=module_globals,
    )


def _isolate(hub_ref: weakref.ref[Hub], info: PluginInfo, hook: str, exc: Exception | SystemExit) -> None:
    """Fail ``info``'s plugin in its hub; re-raise ``exc`` when the hub is gone (a hook called
    through a plugin manager kept after its hub was freed: there is nothing to isolate it in)."""
    hub = hub_ref()
    if hub is None:
        raise exc
    fail(hub, info, hook, exc, PluginError(info.name, f"{exc!r}{raised_at(exc)}", hook=hook))


def guard(hub: Hub, info: PluginInfo, hook: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, a plain hookimpl of ``info``'s plugin, run as that plugin and isolated on error.

    The guard holds its hub weakly: the hub holds the plugin manager, which holds the guards,
    so a strong reference made every hub with a plugin a cycle that only the gc could free."""
    event = hook.startswith("foundation_on_")
    is_app = info.source in {"app", "builtin"}
    hub_ref = weakref.ref(hub)

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if info.status == "failed":  # isolated during this very hook call (pluggy copied the list)
            return None
        token = current_plugin.set((info.name, is_app))
        try:
            result = fn(*args, **kwargs)
        except ConfigError:
            raise  # the user's configuration is wrong, not the plugin: never isolate that
        except (Exception, SystemExit) as exc:  # a plugin's sys.exit() fails it, as at import;
            # other BaseExceptions (Ctrl-C, a task's cancellation, a generator closed) are not its
            if is_app and isinstance(exc, SystemExit):
                raise  # the application's own exit, from an observer too: never a warning
            if event:  # an observer's failure never breaks the event's source
                _warn_from_plugin(f"plugin {info.name!r} raised in {hook}: {exc!r}", exc, 2)
                return None
            if is_app:
                raise
            _isolate(hub_ref, info, hook, exc)
            return None
        finally:
            current_plugin.reset(token)
        if hook == "foundation_startup":
            started = hub_ref()
            if started is not None and info.name not in started._started:  # once, whatever
                started._started.append(info.name)  # its number of startup hookimpls
        return result

    return guarded


def guard_wrapper(hub: Hub, info: PluginInfo, hook: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A wrapper hookimpl (a generator pluggy advances around the other hookimpls), run as its
    plugin: what it registers is credited to it, and an installed plugin's own error isolates
    it (the hook's result still goes on) instead of escaping ``start()``. An error of the
    wrapped hookimpls passing through it is not the wrapper's. It holds its hub weakly (see
    ``guard``)."""
    ident = (info.name, info.source in {"app", "builtin"})
    hub_ref = weakref.ref(hub)

    def step(call: Callable[..., Any], *args: Any) -> Any:
        token = current_plugin.set(ident)
        try:
            return call(*args)
        finally:
            current_plugin.reset(token)

    def isolate(exc: Exception) -> None:
        if ident[1] or isinstance(exc, ConfigError):
            raise exc
        _isolate(hub_ref, info, hook, exc)

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if info.status == "failed":
            return (yield)
        try:
            gen = step(fn, *args, **kwargs)
            value = step(next, gen)
        except Exception as exc:  # failed before its yield: the others still run
            isolate(exc)
            return (yield)
        while True:
            try:
                sent = yield value
            except BaseException as inner:  # the wrapped hookimpls raised: pass it in
                try:
                    value = step(gen.throw, inner)
                except StopIteration as stop:
                    return stop.value
                except Exception as exc:
                    if exc is inner:
                        raise
                    isolate(exc)
                    raise inner from None
                continue
            try:
                value = step(gen.send, sent)
            except StopIteration as stop:
                return stop.value
            except Exception as exc:
                isolate(exc)
                return sent

    return guarded


def fail(hub: Hub, info: PluginInfo, hook: str | None, exc: BaseException, err: PluginError) -> None:
    """Isolate a failed plugin: roll back what it registered, unregister it, report it."""
    info.status = "failed"
    info.error = str(err)
    info.error_hook = hook
    for registry in (hub.patterns, hub.transports, hub.model_backends):
        registry.remove_plugin(info.name)
    hub.commands.remove_plugin(info.name)
    hub.sections.remove_plugin(info.name)
    if info.plugin is not None and hub.pm.is_registered(info.plugin):
        hub.pm.unregister(info.plugin)
    if hub._registered:  # what it hid wins again; `foundation plugins` lists what is true now
        hub._record_registrations()
    if hub.strict:
        raise err from exc
    origin = f" [distribution {info.distribution} {info.version}]" if info.distribution else ""
    _warn_from_plugin(
        f"{err}{origin} -- the other plugins carry on (FOUNDATION_STRICT_PLUGINS=1 makes this "
        f"fatal; `foundation plugins` lists it)",
        exc,
        3,
    )
    _events.emit_from(hub, "plugin_error", plugin=info.name, hook=hook, error=exc)
    if hub._registered or hub._startup_began:  # a failure after loading: its dependants
        hub._check_requirements()
