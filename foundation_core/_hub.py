"""The hub: one plugin manager, its registries and configuration, and the plugin lifecycle.

``start()`` composes everything installed: load entry points (isolating broken plugins), register
the application's own objects, run the registration hooks, build the configuration, start up.
``Hub.shutdown()`` runs in reverse start-up order, also after a start-up that failed halfway.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import pluggy

from . import _events, hookspecs
from ._cli import CommandRegistrar
from ._clock import Clock
from ._config import Config, SectionAdder, default_config
from ._discovery import PluginInfo, Selection, discover, normalize
from ._markers import PROJECT_NAME
from ._pipeline import ORDER, build_pipeline
from ._registry import Registrar, Registry, current_plugin
from .errors import ConfigError, FoundationError, PluginError, PluginLoadError

__all__ = ["FoundationPluginWarning", "Hub", "start"]

_REGISTRATION_HOOKS = (
    ("foundation_register_patterns", "patterns"),
    ("foundation_register_transports", "transports"),
    ("foundation_register_model_backends", "model_backends"),
)


class FoundationPluginWarning(UserWarning):
    """A plugin failed and was isolated; the others carry on (see ``foundation plugins``)."""


class Hub:
    """Owns the plugin manager, the registries (patterns, transports, model backends, commands,
    config sections), the frozen configuration and the lifecycle. Use :func:`start` to get a ready one."""

    def __init__(self, *, strict: bool | None = None, env: Mapping[str, str] | None = None) -> None:
        self.selection = Selection.from_env(env, strict)
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.patterns: Registry[Any] = Registry("pattern", self._disabled_hint)
        self.transports: Registry[Any] = Registry("transport", self._disabled_hint)
        self.model_backends: Registry[Any] = Registry("model backend", self._disabled_hint)
        self.commands = CommandRegistrar()
        self.sections = SectionAdder()
        self.config: Config | None = None
        self._config_sources: tuple[tuple[str, ...], tuple[str, ...], bool] | None = None
        self._started: list[str] = []
        self._startup_began = False
        self._registered = False
        env = env if env is not None else os.environ
        if env.get("FOUNDATION_TRACE_HOOKS", "").strip() not in {"", "0"}:
            self.pm.trace.root.setwriter(lambda s: sys.stderr.write(f"[foundation-trace] {s}"))
            self.pm.enable_tracing()

    @property
    def strict(self) -> bool:
        return self.selection.strict

    # --- loading ------------------------------------------------------------------------------

    def load_entry_points(self) -> None:
        """Load every selected entry-point plugin; a broken one is reported, the rest load."""
        for ep, info in discover(self.selection):
            held = self.plugins.get(info.name)
            if held is not None:  # the core ("foundation") or an application object has it
                if info.status != "loaded":
                    continue
                err = PluginLoadError(
                    info.name,
                    f"entry point {ep.value!r} (distribution {info.distribution!r}) has the name of the "
                    f"{held.source} plugin {info.name!r}; it is not loaded (rename its entry point)",
                )
                if self.strict:
                    raise err
                warnings.warn(str(err), FoundationPluginWarning, stacklevel=2)
                continue
            self.plugins[info.name] = info
            if info.status != "loaded":
                continue
            try:
                obj = ep.load()
                if inspect.isclass(obj):
                    obj = obj()
            except (Exception, SystemExit) as exc:  # a plugin calling sys.exit() fails alone
                self._fail(info, None, exc, PluginLoadError(info.name, _describe_load_error(ep.value, exc)))
                continue
            self._register(info, obj)
        self._check_requirements()
        known_names = {normalize(n) for n in self.plugins}
        unknown = sorted(self.selection.disabled - known_names)
        if unknown:  # harmless (nothing to disable), but most often a typo: say so
            warnings.warn(
                f"FOUNDATION_DISABLE_PLUGINS names {', '.join(unknown)}, which no installed plugin "
                f"has (installed: {', '.join(sorted(self.plugins)) or 'none'})",
                FoundationPluginWarning,
                stacklevel=2,
            )
        if self.selection.only:
            missing = sorted(self.selection.only - known_names)
            if missing:
                known = ", ".join(sorted(self.plugins)) or "none"
                raise PluginLoadError(
                    ",".join(missing),
                    f"FOUNDATION_PLUGINS names {', '.join(missing)} but no installed plugin has "
                    f"that name (installed: {known})",
                )

    def register(
        self, plugin: object, name: str | None = None, *, override: bool = True, _builtin: bool = False
    ) -> str:
        """Register an object of hookimpls.

        With ``override=True`` (the default) it is an application override: what it registers
        wins over installed plugins whatever the call order, and its errors are never swallowed.
        With ``override=False`` it is treated exactly like an installed entry-point plugin
        (isolated on failure, subject to name clashes), which is what a plugin's own tests want.
        """
        if self._registered:
            raise FoundationError("register application plugins before the registration hooks run")
        name = name or getattr(plugin, "foundation_name", None) or _plugin_name(plugin)
        if name in self.plugins:
            raise FoundationError(f"a plugin named {name!r} is already registered; pass name=")
        if override:
            info = PluginInfo(name=name, source="builtin" if _builtin else "app", status="app")
        else:
            info = PluginInfo(name=name, source="entry-point", status="loaded")
        self.plugins[name] = info
        self._register(info, plugin)
        if info.status == "failed" and override:
            raise PluginError(name, info.error or "invalid hookimpls")
        return name

    def _register(self, info: PluginInfo, obj: object) -> None:
        try:
            self.pm.register(obj, name=info.name)
        except Exception as exc:
            # pluggy adds hookimpls one by one and stops at the first invalid one: take back
            # those it added, or they would run unguarded for a plugin reported as failed
            if self.pm.get_plugin(info.name) is obj:
                self.pm.unregister(obj)
            message = " ".join(str(exc).split())  # pluggy's message spans lines; ours is one
            self._fail(info, None, exc, PluginLoadError(info.name, message))
            return
        unknown = [hc.name for hc in self.pm.get_hookcallers(obj) or [] if hc.spec is None]
        if unknown:
            self.pm.unregister(obj)
            msgs = []
            for hook in unknown:
                near = difflib.get_close_matches(hook, _spec_names(), n=1)
                msgs.append(
                    f"{hook!r} is not a foundation hook" + (f" (did you mean {near[0]!r}?)" if near else "")
                )
            err = PluginLoadError(info.name, "; ".join(msgs))
            self._fail(info, None, err, err)
            return
        info.plugin = obj
        info.hooks = sorted({hc.name for hc in self.pm.get_hookcallers(obj) or []})
        for hc in self.pm.get_hookcallers(obj) or []:
            for impl in hc.get_hookimpls():
                if impl.plugin is obj:
                    guard = self._guard_wrapper if impl.hookwrapper or impl.wrapper else self._guard
                    impl.function = guard(info, hc.name, impl.function)  # type: ignore[misc]

    def _check_requirements(self) -> None:
        """Fail every active plugin whose ``FOUNDATION_REQUIRES`` names a plugin that is not
        active, until none is left: a plugin needing one that fails for its own needs fails too."""
        changed = True
        while changed:
            changed = False
            for info in list(self.plugins.values()):
                if info.status not in {"loaded", "app"} or info.plugin is None:
                    continue  # failed or not selected: nothing to check
                problem = self._unmet(info)
                if problem:
                    err = PluginLoadError(info.name, problem)
                    self._fail(info, None, err, err)
                    changed = True

    def _unmet(self, info: PluginInfo) -> str | None:
        needs = getattr(info.plugin, "FOUNDATION_REQUIRES", ())
        if isinstance(needs, str) or not all(isinstance(n, str) for n in _iter_or_none(needs)):
            return (
                f"FOUNDATION_REQUIRES must be a list of plugin names, not {needs!r} "
                f"(for one plugin: [{needs!r}])"
                if isinstance(needs, str)
                else f"FOUNDATION_REQUIRES must be a list of plugin names, not {needs!r}"
            )
        for need in needs:
            other = self.plugins.get(need)
            if other is not None and other.status in {"loaded", "app"}:
                continue
            why = (
                "is not installed"
                if other is None
                else (
                    f"failed ({other.error})"
                    if other.status == "failed"
                    else f"is {self.selection.reason(need)}"
                )
            )
            return (
                f"it needs plugin {need!r}, which {why}; enable {need!r} or disable "
                f"{info.name!r} with FOUNDATION_DISABLE_PLUGINS={info.name}"
            )
        return None

    # --- isolation ----------------------------------------------------------------------------

    def _guard(self, info: PluginInfo, hook: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        event = hook.startswith("foundation_on_")
        is_app = info.source in {"app", "builtin"}

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if info.status == "failed":  # isolated during this very hook call (pluggy copied the list)
                return None
            token = current_plugin.set((info.name, is_app))
            try:
                result = fn(*args, **kwargs)
            except ConfigError:
                raise  # the user's configuration is wrong, not the plugin: never isolate that
            except Exception as exc:
                if event:  # an observer's failure never breaks the event's source
                    warnings.warn(
                        f"plugin {info.name!r} raised in {hook}: {exc!r}",
                        FoundationPluginWarning,
                        stacklevel=2,
                    )
                    return None
                if is_app:
                    raise
                self._fail(info, hook, exc, PluginError(info.name, repr(exc), hook=hook))
                return None
            finally:
                current_plugin.reset(token)
            if hook == "foundation_startup":
                self._started.append(info.name)
            return result

        return guarded

    def _guard_wrapper(self, info: PluginInfo, hook: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """A wrapper hookimpl (a generator pluggy advances around the other hookimpls), run as its
        plugin: what it registers is credited to it, and an installed plugin's own error isolates
        it (the hook's result still goes on) instead of escaping ``start()``. An error of the
        wrapped hookimpls passing through it is not the wrapper's."""
        ident = (info.name, info.source in {"app", "builtin"})

        def step(call: Callable[..., Any], *args: Any) -> Any:
            token = current_plugin.set(ident)
            try:
                return call(*args)
            finally:
                current_plugin.reset(token)

        def isolate(exc: Exception) -> None:
            if ident[1] or isinstance(exc, ConfigError):
                raise exc
            self._fail(info, hook, exc, PluginError(info.name, repr(exc), hook=hook))

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

    def _fail(self, info: PluginInfo, hook: str | None, exc: BaseException, err: PluginError) -> None:
        """Isolate a failed plugin: roll back what it registered, unregister it, report it."""
        info.status = "failed"
        info.error = str(err)
        info.error_hook = hook
        for registry in (self.patterns, self.transports, self.model_backends):
            registry.remove_plugin(info.name)
        self.commands.remove_plugin(info.name)
        self.sections.remove_plugin(info.name)
        if info.plugin is not None and self.pm.is_registered(info.plugin):
            self.pm.unregister(info.plugin)
        if self.strict:
            raise err from exc
        warnings.warn(
            f"{err} -- the other plugins carry on (FOUNDATION_STRICT_PLUGINS=1 makes this "
            f"fatal; `foundation plugins` lists it)",
            FoundationPluginWarning,
            stacklevel=3,
        )
        _events.emit_from(self, "plugin_error", plugin=info.name, hook=hook, error=exc)
        if self._registered or self._startup_began:  # a failure after loading: its dependants
            self._check_requirements()

    def _why_inactive(self, info: PluginInfo) -> str:
        return f"failed: {info.error}" if info.status == "failed" else self.selection.reason(info.name)

    def _disabled_hint(self, name: str) -> str:
        off = [
            f"{i.name} ({self._why_inactive(i)})"
            for i in self.plugins.values()
            if i.status in {"disabled", "not-selected", "failed"}
        ]
        return f"; plugins not active: {', '.join(off)}" if off else ""

    # --- phases -------------------------------------------------------------------------------

    def run_registration(self) -> None:
        """Call the registration hooks (patterns, transports, backends, commands, config sections)."""
        if self._registered:
            return
        self._registered = True
        for hook_name, attr in _REGISTRATION_HOOKS:
            getattr(self.pm.hook, hook_name)(register=Registrar(getattr(self, attr)))
        self.pm.hook.foundation_register_commands(cli=self.commands)
        self.pm.hook.foundation_config_sections(add=self.sections)
        for info in self.plugins.values():
            if info.status in {"loaded", "app"}:
                info.registered = {
                    "patterns": self.patterns.by_plugin(info.name),
                    "transports": self.transports.by_plugin(info.name),
                    "model_backends": self.model_backends.by_plugin(info.name),
                    "commands": self.commands.by_plugin(info.name),
                    "config_sections": sorted(n for n, p in self.sections.owners.items() if p == info.name),
                }

    def configure(
        self, files: Sequence[str] = (), overrides: Sequence[str] = (), *, strict: bool = False
    ) -> Config:
        """Build and freeze the configuration, then hand it to ``foundation_configure``.

        Called again with the same sources, it returns the configuration already built and
        calls no hook again (the CLI configures the hub before a command's handler when
        ``--config``/``--set`` are given; a handler then asks for the same sources)."""
        sources = (tuple(files), tuple(overrides), strict)
        if self.config is not None and self._config_sources == sources:
            return self.config
        self.run_registration()
        sections = self.sections.resolved()
        config: Config | None = self.pm.hook.foundation_load_config(
            sections=sections, files=list(files), overrides=list(overrides), strict=strict
        )
        if config is not None and not isinstance(config, Config):
            impl = self.pm.hook.foundation_load_config.get_hookimpls()
            who = ", ".join(i.plugin_name for i in impl) or "a plugin"
            raise PluginError(
                who,
                f"foundation_load_config returned {type(config).__name__}, not a foundation_core.Config",
                hook="foundation_load_config",
            )
        if config is None:
            if files or overrides:
                raise ConfigError(
                    "config files and --set overrides need the config plugin "
                    "(pip install foundation-config); it is not active"
                )
            config = default_config(sections)
        self.config, self._config_sources = config, None
        self.pm.hook.foundation_configure(config=config)
        self._config_sources = sources  # only once every plugin took it
        return config

    def startup(self) -> None:
        """Run ``foundation_startup``; if it fails halfway, shut down what started, then raise."""
        if self._startup_began:  # once each (a second call would start every plugin again)
            return
        if self.config is None:
            self.configure()
        _events.activate(self)
        self._startup_began = True
        try:
            self.pm.hook.foundation_startup(hub=self)
        except BaseException:
            self.shutdown()
            raise

    def shutdown(self) -> None:
        """Run ``foundation_shutdown`` in reverse start-up order, for every started plugin.

        Plugins without a start-up hook count as started first. Every plugin gets its turn even
        if one raised: plugin errors are reported, an application object's error is re-raised
        at the end. Without a prior ``startup()`` this does nothing.
        """
        if not self._startup_began:
            return
        self._startup_began = False
        with_startup = {i.plugin_name for i in self.pm.hook.foundation_startup.get_hookimpls()}
        every = self.pm.hook.foundation_shutdown.get_hookimpls()
        impls = {i.plugin_name: i for i in every if not (i.wrapper or i.hookwrapper)}
        order = [n for n in impls if n not in with_startup] + self._started
        self._started = []
        first_error: BaseException | None = None
        # wrappers run around the whole shutdown, outermost first, as pluggy would run them
        opened: list[tuple[Any, bool]] = []
        for wrapper in reversed([i for i in every if i.wrapper or i.hookwrapper]):
            try:
                gen: Any = wrapper.function(*[{"hub": self}[a] for a in wrapper.argnames])  # guarded
                next(gen)
                opened.append((gen, bool(wrapper.hookwrapper)))
            except Exception as exc:
                first_error = first_error or exc
        for name in reversed(order):
            impl = impls.get(name)
            if impl is None:
                continue
            try:
                impl.function(*[{"hub": self}[a] for a in impl.argnames])  # the guarded function
            except Exception as exc:
                first_error = first_error or exc
        for gen, old_style in reversed(opened):
            try:
                gen.send(pluggy.Result(None, None) if old_style else None)
            except StopIteration:
                pass
            except Exception as exc:
                first_error = first_error or exc
        _events.deactivate(self)
        if first_error is not None:
            raise first_error

    def __enter__(self) -> Hub:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()

    # --- composition ----------------------------------------------------------------------------

    def pipeline(self, *, clock: Clock | None = None, order: Sequence[str] = ORDER, **layers: Any) -> Any:
        """A decorator stacking the named patterns in :data:`~foundation_core._pipeline.ORDER`
        (fallback, timeout, retry, circuit_breaker, rate_limit; outermost first)::

            @hub.pipeline(retry=True, circuit_breaker={"name": "db"}, timeout=2.0)
            def query(sql): ...
        """
        return build_pipeline(self, clock=clock, order=order, **layers)

    # --- queries ------------------------------------------------------------------------------

    def plugin_infos(self) -> list[PluginInfo]:
        return [self.plugins[n] for n in sorted(self.plugins)]

    def failed(self) -> list[PluginInfo]:
        return [i for i in self.plugin_infos() if i.status == "failed"]


def start(
    plugins: Iterable[object] = (),
    *,
    installed: Iterable[object] = (),
    config_files: Sequence[str] = (),
    overrides: Sequence[str] = (),
    strict: bool | None = None,
    entry_points: bool = True,
    env: Mapping[str, str] | None = None,
) -> Hub:
    """Compose a ready hub: load entry points, register ``installed`` (objects treated as
    installed plugins) and ``plugins`` (application overrides), then run registration,
    configuration and start-up. Use it as a context manager to shut down::

        with foundation_core.start(plugins=[MyOverrides()]) as hub:
            retry = hub.patterns.get("retry")
    """
    hub = Hub(strict=strict, env=env)
    if entry_points:
        hub.load_entry_points()
    for obj in installed:
        hub.register(obj, override=False)
    if installed:  # exactly as if they were installed: their FOUNDATION_REQUIRES are checked too
        hub._check_requirements()
    for obj in plugins:
        hub.register(obj)
    hub.run_registration()
    hub.configure(config_files, overrides)
    hub.startup()
    return hub


def _iter_or_none(value: object) -> Iterable[object]:
    try:
        return list(value)  # type: ignore[call-overload,no-any-return]
    except TypeError:
        return [None]  # not iterable: reported as not a list of names


def _plugin_name(obj: object) -> str:
    if inspect.ismodule(obj):
        return obj.__name__
    return type(obj).__name__ if not inspect.isclass(obj) else obj.__name__


@functools.cache
def _spec_names() -> list[str]:
    return [n for n in dir(hookspecs) if n.startswith("foundation_")]


def _describe_load_error(value: str, exc: BaseException) -> str:
    own = value.partition(":")[0].strip()
    if isinstance(exc, ModuleNotFoundError) and exc.name and not (own + ".").startswith(exc.name + "."):
        return (
            f"importing entry point {value!r} failed: it needs module {exc.name!r}, which is not "
            f"installed ({exc}); install the plugin's dependencies or disable it with "
            "FOUNDATION_DISABLE_PLUGINS"
        )
    if isinstance(exc, ModuleNotFoundError):
        return (
            f"entry point {value!r} names module {exc.name!r}, which cannot be imported "
            f"({exc}); reinstall the plugin or disable it with FOUNDATION_DISABLE_PLUGINS"
        )
    if isinstance(exc, AttributeError):
        return f"entry point {value!r} names an attribute that does not exist ({exc})"
    return f"importing entry point {value!r} raised {exc!r}"
