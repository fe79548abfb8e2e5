"""Loading plugins into a hub: entry points imported, hookimpls registered under their guards.

The selected entry points whose distribution admits the running core (see
``_requirements.unmet_core``) are imported, and each plugin's hookimpls are registered with the
plugin manager, every one of them wrapped in its guard (see ``_isolation``).

A plugin made for another core version, one that fails to import, has invalid or unknown
hookimpls, or takes a name already held is reported by name with what went wrong and how to fix
it; the other plugins still load.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import warnings
from importlib.metadata import EntryPoint
from typing import TYPE_CHECKING

from . import hookspecs
from ._discovery import discover, normalize
from ._isolation import FoundationPluginWarning, fail, guard, guard_wrapper, raised_at
from ._markers import PROJECT_NAME
from ._requirements import check_requirements, unmet_core
from .errors import PluginLoadError

if TYPE_CHECKING:
    from ._discovery import PluginInfo
    from ._hub import Hub

__all__ = ["describe_load_error", "load_entry_points", "plugin_name", "register_plugin"]


def load_entry_points(hub: Hub) -> None:
    """Load every selected entry-point plugin into ``hub``; a broken one is reported, the rest load.

    Called through :meth:`Hub.load_entry_points`: its warnings name that method's caller."""
    for ep, info in discover(hub.selection):
        held = _holder(hub, info.name)
        if held is not None:  # the core, an application object or another distribution has it
            if info.status != "loaded":
                continue
            why = (
                f"has the name of plugin {held.name!r} of distribution {held.distribution!r} (entry "
                f"point {held.value!r}), found first; it is not loaded (uninstall one of the two)"
                if held.source == "entry-point"
                else f"has the name of the {held.source} plugin {held.name!r}; it is not loaded "
                "(rename its entry point)"
            )
            err = PluginLoadError(
                info.name, f"entry point {ep.value!r} (distribution {info.distribution!r}) {why}"
            )
            if hub.strict:
                raise err
            warnings.warn(str(err), FoundationPluginWarning, stacklevel=3)
            continue
        hub.plugins[info.name] = info
        if info.status != "loaded":
            continue
        problem = unmet_core(info)
        if problem:  # made for another core: importing it could fail, or worse, half-work
            err = PluginLoadError(info.name, problem)
            fail(hub, info, None, err, err)
            continue
        if EntryPoint.pattern.match(ep.value) is None:  # ep.load() would fail with an AttributeError
            err = PluginLoadError(
                info.name,
                f"entry point value {ep.value!r} is not 'module' or 'module:attribute'; fix the "
                "[project.entry-points.foundation] table of its distribution",
            )
            fail(hub, info, None, err, err)
            continue
        try:
            obj = ep.load()
            if inspect.isclass(obj):
                obj = obj()
        except KeyboardInterrupt:  # the user's Ctrl-C while it imports
            raise
        except BaseException as exc:  # a plugin calling sys.exit() (or raising its own) fails alone
            err = PluginLoadError(info.name, describe_load_error(ep.value, exc, info.name))
            fail(hub, info, None, exc, err)
            continue
        problem = _not_a_plugin(ep.value, obj)
        if problem:
            err = PluginLoadError(info.name, problem)
            fail(hub, info, None, err, err)
            continue
        register_plugin(hub, info, obj)
    check_requirements(hub)
    installed = sorted(n for n, i in hub.plugins.items() if i.source == "entry-point")
    others = {normalize(n) for n, i in hub.plugins.items() if i.source != "entry-point"}
    fixed = sorted(hub.selection.disabled & others)
    unknown = sorted(hub.selection.disabled - others - {normalize(n) for n in installed})
    if fixed:  # the builtin one, or one the application registered itself: not the env's to drop
        warnings.warn(
            f"FOUNDATION_DISABLE_PLUGINS names {', '.join(fixed)}, which is not an installed plugin "
            "but built in or registered by the application: it stays",
            FoundationPluginWarning,
            stacklevel=3,
        )
    if unknown:  # harmless (nothing to disable), but most often a typo: say so
        warnings.warn(
            f"FOUNDATION_DISABLE_PLUGINS names {', '.join(unknown)}, which no installed plugin "
            f"has (installed: {', '.join(installed) or 'none'})",
            FoundationPluginWarning,
            stacklevel=3,
        )
    if hub.selection.only:  # naming the builtin one there is no error: it is always loaded
        missing = sorted(hub.selection.only - others - {normalize(n) for n in installed})
        if missing:
            known = ", ".join(installed) or "none"
            raise PluginLoadError(
                ",".join(missing),
                f"FOUNDATION_PLUGINS names {', '.join(missing)} but no installed plugin has "
                f"that name (installed: {known})",
            )


def _holder(hub: Hub, name: str) -> PluginInfo | None:
    """The plugin already holding ``name`` as the selection variables match names, if any."""
    key = normalize(name)
    return next((i for n, i in hub.plugins.items() if normalize(n) == key), None)


def _not_a_plugin(value: str, obj: object) -> str | None:
    """Why the object entry point ``value`` names cannot hold hookimpls, or None if it can:
    a function (often the hookimpl itself, named instead of its module) or a plain value."""
    if inspect.ismodule(obj):
        return _hooks_only_in_a_class(value, obj)
    if inspect.isroutine(obj):
        if getattr(obj, f"{PROJECT_NAME}_impl", None) is not None:
            module = value.partition(":")[0].strip()
            return (
                f"entry point {value!r} names the hookimpl {getattr(obj, '__name__', obj)!r} itself, "
                f"not a plugin: name the module or class holding the hookimpls ({module!r})"
            )
        return f"entry point {value!r} names a function, not a module or class of hookimpls"
    if type(obj).__module__ == "builtins":  # None, a number, a string, a list...
        return f"entry point {value!r} names {obj!r}, not a module or class of hookimpls"
    return None


def _marked(obj: object) -> bool:
    """Whether ``obj`` (a module or a class) has a function marked ``@hookimpl``, under any
    name: pluggy registers a hookimpl by its mark, so one named otherwise (``specname=``) counts.
    Read from the namespaces themselves (a hostile ``__getattr__`` is never called)."""
    try:
        spaces = [vars(obj)] if inspect.ismodule(obj) else [vars(k) for k in inspect.getmro(obj)]  # type: ignore[arg-type]
    except Exception:  # no namespace to read: nothing found
        return False
    for space in spaces:
        for attr in list(space.values()):
            attr = getattr(attr, "__func__", attr) if isinstance(attr, staticmethod | classmethod) else attr
            if inspect.isroutine(attr) and getattr(attr, f"{PROJECT_NAME}_impl", None) is not None:
                return True
    return False


def _hooks_only_in_a_class(value: str, module: object) -> str | None:
    """A module of no hookimpls whose own classes hold some: its plugin would load, register
    nothing and be reported loaded (a transport then 'not registered', with no word why)."""
    if _marked(module):
        return None
    name = getattr(module, "__name__", "")
    holders = sorted(
        attr
        for attr, cls in vars(module).items()
        if inspect.isclass(cls) and getattr(cls, "__module__", None) == name and _marked(cls)
    )
    if not holders:
        return None
    return (
        f"entry point {value!r} names a module with no hookimpls of its own; its class "
        f"{holders[0]!r} holds them: name the class ('{name}:{holders[0]}')"
    )


def _unmarked(obj: object) -> list[str]:
    """The functions of ``obj`` named after a hook but not marked ``@hookimpl``: pluggy skips
    them, so the plugin would load and never be called."""
    found = []
    for name in _spec_names():
        try:
            attr = getattr(obj, name, None)
        except Exception:  # a property or a module __getattr__ that raises: not a function
            continue
        if callable(attr) and getattr(attr, f"{PROJECT_NAME}_impl", None) is None:
            found.append(name)
    return found


def _catch_alls(obj: object) -> list[str]:
    """The hookimpls of ``obj`` pluggy would never call (marked, but no function or method: a
    ``functools.partial``) or with a parameter it never fills. pluggy passes a hook's
    arguments by name, each to the plain parameter of that name without a default: a catch-all
    (``*args``, ``**kwargs``) always stays empty (an observer written ``foundation_on_retry(self,
    **event)`` would see no event), and a hook argument given a default or made keyword-only
    always keeps its default (``attempt=0`` would read 0 at every retry)."""
    found: list[str] = []
    try:
        names = dir(obj)
    except Exception:  # a hostile __dir__: pluggy's register, which calls it too, reports it
        return found
    specs = set(_spec_names())
    for name in names:  # as pluggy finds hookimpls: by their mark, under any name (specname=)
        try:
            attr = getattr(obj, name, None)
            routine = inspect.isroutine(attr)
            opts = getattr(attr, f"{PROJECT_NAME}_impl", None) if routine or callable(attr) else None
        except Exception:  # a property or a module __getattr__ that raises: not a hookimpl
            continue
        if not routine and isinstance(opts, dict):
            # pluggy takes only functions and methods for hookimpls and skips anything else
            # unseen: a marked functools.partial (or callable object) loaded and never ran
            found.append(
                f"{name!r} is marked @hookimpl but is a "
                f"{'class' if inspect.isclass(attr) else type(attr).__name__}, not a function or "
                f"method, so pluggy never calls it: mark a def (which may call it) instead"
            )
            continue
        hook = (opts.get("specname") or name) if isinstance(opts, dict) else None
        if hook not in specs or not callable(attr):  # not a hookimpl of a foundation hook
            continue
        try:
            params = inspect.signature(attr).parameters.values()
        except (TypeError, ValueError):
            continue
        spec_args = inspect.signature(getattr(hookspecs, hook)).parameters
        spec = ", ".join(spec_args)
        shown = repr(hook) if hook == name else f"{name!r} (hook {hook!r})"
        var = [p for p in params if p.kind in {p.VAR_POSITIONAL, p.VAR_KEYWORD}]
        if var:
            star = "**" if var[0].kind is var[0].VAR_KEYWORD else "*"
            found.append(
                f"{shown} takes {star}{var[0].name}, which pluggy never fills (it passes each "
                f"argument by name): name those it needs, of ({spec})"
            )
        kept = [
            p.name
            for p in params
            if p.name in spec_args and (p.kind is p.KEYWORD_ONLY or p.default is not p.empty)
        ]
        if kept:
            found.append(
                f"{shown} gives {', '.join(kept)} a default or makes {'it' if len(kept) == 1 else 'them'} "
                f"keyword-only, so pluggy never passes {'it' if len(kept) == 1 else 'them'} (it fills "
                f"only plain parameters without a default): drop the default or the '*'"
            )
    return found


def _unknown_arguments(obj: object) -> list[str]:
    """For each hookimpl of ``obj`` taking an argument its hook does not pass (which pluggy
    refuses, naming only that argument): the hook's arguments, and the one probably meant."""
    found: list[str] = []
    try:
        names = dir(obj)
    except Exception:  # a hostile __dir__: pluggy's own message stands alone
        return found
    specs = set(_spec_names())
    for name in names:
        try:
            attr = getattr(obj, name, None)
            if not inspect.isroutine(attr):
                continue
            opts = getattr(attr, f"{PROJECT_NAME}_impl", None)
            hook = (opts.get("specname") or name) if isinstance(opts, dict) else None
            if hook not in specs:
                continue
            params = list(inspect.signature(attr).parameters.values())
        except Exception:  # a property or a module __getattr__ that raises, an odd signature
            continue
        qualified = "." in getattr(attr, "__qualname__", "")
        if params and params[0].name == "self" and qualified and not inspect.ismethod(attr):
            params = params[1:]  # a class's function: pluggy skips its self too
        spec_args = list(inspect.signature(getattr(hookspecs, hook)).parameters)
        plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for param in params:
            if param.kind in plain and param.default is param.empty and param.name not in spec_args:
                near = difflib.get_close_matches(param.name, spec_args, n=1)
                found.append(
                    f"hook {hook!r} has no argument {param.name!r}"
                    + (f" (did you mean {near[0]!r}?)" if near else "")
                    + f": its arguments are ({', '.join(spec_args)}), a hookimpl takes any of them by name"
                )
    return found


def _refuse(hub: Hub, info: PluginInfo, exc: BaseException, err: PluginLoadError) -> None:
    """Fail plugin ``info`` as it registers. An application's own object is never isolated: its
    error is raised (once: not also warned about as a plugin the others carry on without)."""
    if info.source in {"app", "builtin"}:
        info.status, info.error = "failed", str(err)
        raise err from (None if exc is err else exc)
    fail(hub, info, None, exc, err)


def register_plugin(hub: Hub, info: PluginInfo, obj: object) -> None:
    """Register ``obj``'s hookimpls as plugin ``info``, each wrapped in its guard; invalid or
    unknown hookimpls fail the plugin (and register none of its hookimpls): an installed one is
    isolated, an application's object raises ``PluginLoadError``."""
    problems = [f"{n!r} is not marked @hookimpl, so it would never be called" for n in _unmarked(obj)]
    problems += _catch_alls(obj)
    other = hub.pm.get_name(obj)
    if other is not None:  # two entry points naming one module: pluggy's message lists every plugin
        problems.append(f"its object is already plugin {other!r} (an object can be one plugin only)")
    if problems:
        err = PluginLoadError(info.name, "; ".join(problems))
        _refuse(hub, info, err, err)
        return
    try:
        hub.pm.register(obj, name=info.name)
    except Exception as exc:
        # pluggy adds hookimpls one by one and stops at the first invalid one: take back
        # those it added, or they would run unguarded for a plugin reported as failed
        if hub.pm.get_plugin(info.name) is obj:
            hub.pm.unregister(obj)
        message = " ".join(str(exc).split())  # pluggy's message spans lines; ours is one
        message = "; ".join([message, *_unknown_arguments(obj)])
        _refuse(hub, info, exc, PluginLoadError(info.name, message))
        return
    unknown = [hc.name for hc in hub.pm.get_hookcallers(obj) or [] if hc.spec is None]
    if unknown:
        hub.pm.unregister(obj)
        msgs = []
        for hook in unknown:
            near = difflib.get_close_matches(hook, _spec_names(), n=1)
            msgs.append(
                f"{hook!r} is not a foundation hook" + (f" (did you mean {near[0]!r}?)" if near else "")
            )
        err = PluginLoadError(info.name, "; ".join(msgs))
        _refuse(hub, info, err, err)
        return
    info.plugin = obj
    info.hooks = sorted({hc.name for hc in hub.pm.get_hookcallers(obj) or []})
    for hc in hub.pm.get_hookcallers(obj) or []:
        for impl in hc.get_hookimpls():
            if impl.plugin is obj:
                wrap = guard_wrapper if impl.hookwrapper or impl.wrapper else guard
                impl.function = wrap(hub, info, hc.name, impl.function)  # type: ignore[misc]


def plugin_name(obj: object) -> str:
    """The name an object registered without one gets: its module's or its class's name."""
    if inspect.ismodule(obj):
        return obj.__name__
    return type(obj).__name__ if not inspect.isclass(obj) else obj.__name__


@functools.cache
def _spec_names() -> list[str]:
    return [n for n in dir(hookspecs) if n.startswith("foundation_")]


def describe_load_error(value: str, exc: BaseException, plugin: str) -> str:
    """What went wrong importing entry point ``value`` (``module:attr``) of ``plugin``, where in
    the plugin's code, and what to do about it."""
    own = value.partition(":")[0].strip()
    at = raised_at(exc)
    disable = f"disable it with FOUNDATION_DISABLE_PLUGINS={plugin}"
    if isinstance(exc, ModuleNotFoundError) and exc.name and not (own + ".").startswith(exc.name + "."):
        return (
            f"importing entry point {value!r} failed: it needs module {exc.name!r}, which is not "
            f"installed ({exc}){at}; install the plugin's dependencies or {disable}"
        )
    if isinstance(exc, ModuleNotFoundError):
        return (
            f"entry point {value!r} names module {exc.name!r}, which cannot be imported "
            f"({exc}){at}; reinstall the plugin or {disable}"
        )
    if isinstance(exc, AttributeError):
        return f"entry point {value!r} names an attribute that does not exist ({exc}){at}"
    return f"importing entry point {value!r} raised {exc!r}{at}"
