"""The hub: one plugin manager, its registries and configuration, and the plugin lifecycle.

``start()`` composes everything installed: load entry points (isolating broken plugins), register
the application's own objects, run the registration hooks, build the configuration, start up.
``Hub.shutdown()`` runs in reverse start-up order, also after a start-up that failed halfway.

How plugins are loaded and registered lives in ``_loading``, how a broken one is isolated in
``_isolation``, and the ``FOUNDATION_REQUIRES`` checks in ``_requirements``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import pluggy

from . import _events, hookspecs
from ._cli import CommandRegistrar
from ._clock import Clock
from ._config import Config, SectionAdder, default_config
from ._discovery import PluginInfo, Selection
from ._extras import install_hint
from ._isolation import FoundationPluginWarning
from ._loading import load_entry_points, plugin_name, register_plugin
from ._markers import PROJECT_NAME
from ._pipeline import ORDER, build_pipeline
from ._registry import Registrar, Registry
from ._requirements import check_requirements
from .errors import ConfigError, FoundationError, PluginError

__all__ = ["FoundationPluginWarning", "Hub", "start"]

_REGISTRATION_HOOKS = (
    ("foundation_register_patterns", "patterns"),
    ("foundation_register_transports", "transports"),
    ("foundation_register_model_backends", "model_backends"),
)


class Hub:
    """Owns the plugin manager, the registries (patterns, transports, model backends, commands,
    config sections), the frozen configuration and the lifecycle. Use :func:`start` to get a ready one."""

    def __init__(self, *, strict: bool | None = None, env: Mapping[str, str] | None = None) -> None:
        self.selection = Selection.from_env(env, strict)
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        # the registries' hint reads the plugin table and the selection, not the hub: a registry
        # holding the hub (a bound method) made every hub a reference cycle, freed only by gc
        hint = functools.partial(_disabled_hint, self.plugins, self.selection)
        self.patterns: Registry[Any] = Registry("pattern", hint, factories=True)
        self.transports: Registry[Any] = Registry("transport", hint, factories=True)
        self.model_backends: Registry[Any] = Registry("model backend", hint, factories=True)
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
        load_entry_points(self)

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
        name = name or getattr(plugin, "foundation_name", None) or plugin_name(plugin)
        if name in self.plugins:
            raise FoundationError(f"a plugin named {name!r} is already registered; pass name=")
        if override:
            info = PluginInfo(name=name, source="builtin" if _builtin else "app", status="app")
        else:
            info = PluginInfo(name=name, source="entry-point", status="loaded")
        self.plugins[name] = info
        try:
            register_plugin(self, info, plugin)  # raises for an application object that fails
        except BaseException:
            # nothing of a refused application object stays: the app mends it and registers
            # it again under the same name (it said "already registered")
            if self.plugins.get(name) is info:
                del self.plugins[name]
            raise
        return name

    def _check_requirements(self) -> None:
        """Fail every active plugin whose ``FOUNDATION_REQUIRES`` is not met (see ``_requirements``).

        :func:`start` calls it once ``installed`` objects are registered, and a plugin failing
        after loading calls it to fail the plugins that need the failed one."""
        check_requirements(self)

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
        self._record_registrations()

    def _record_registrations(self) -> None:
        """Set each plugin's ``registered`` and ``shadowed`` from the registries: after the
        registration hooks, and again when a plugin fails later (its registrations are rolled
        back, so what it hid wins again, and it registers nothing)."""
        for info in self.plugins.values():
            if info.status == "failed":
                info.registered, info.shadowed = {}, {}
            elif info.status in {"loaded", "app"}:
                info.registered = {
                    "patterns": self.patterns.by_plugin(info.name),
                    "transports": self.transports.by_plugin(info.name),
                    "model_backends": self.model_backends.by_plugin(info.name),
                    "commands": self.commands.by_plugin(info.name),
                    "config_sections": sorted(n for n, p in self.sections.owners.items() if p == info.name),
                }
                info.shadowed = {  # what it registered that another's registration hides
                    "patterns": self.patterns.shadowed_of(info.name),
                    "transports": self.transports.shadowed_of(info.name),
                    "model_backends": self.model_backends.shadowed_of(info.name),
                    "commands": self.commands.shadowed_of(info.name),
                    "config_sections": self.sections.shadowed_of(info.name),
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
        previous = (self.config, self._config_sources)
        self.config, self._config_sources = config, None
        try:
            self.pm.hook.foundation_configure(config=config, hub=self)
        except BaseException as exc:
            self._restore_config(*previous, exc)
            raise
        self._config_sources = sources  # only once every plugin took it
        return config

    def _restore_config(
        self,
        config: Config | None,
        sources: tuple[tuple[str, ...], tuple[str, ...], bool] | None,
        error: BaseException,
    ) -> None:
        """A plugin refused a new configuration: nothing of it stays applied. The plugins that
        took it before the refusal get the previous one again (``foundation_configure`` sets a
        plugin's state from the configuration it is given, so a second delivery is harmless);
        with no previous one, the hub has none, and the next ``configure`` hands one to all."""
        self.config, self._config_sources = None, None
        if config is None:
            return
        try:
            self.pm.hook.foundation_configure(config=config, hub=self)
        except Exception as again:  # the plugins' state is unknown: the next configure redoes all
            error.add_note(f"restoring the previous configuration failed too: {again!r}")
            return
        self.config, self._config_sources = config, sources

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
        except BaseException as exc:
            try:
                self.shutdown()
            except BaseException as again:  # the start-up failure stays the error, unless
                if isinstance(exc, Exception) and not isinstance(again, Exception):
                    raise  # the user interrupted the shutdown: stopping is what they asked
                exc.add_note(f"shutting down the plugins started before it raised too: {again!r}")
            raise

    def shutdown(self) -> None:
        """Run ``foundation_shutdown`` in reverse start-up order, for every started plugin.

        Plugins without a start-up hook count as started first. Every plugin gets its turn even
        if one raised, also a ``KeyboardInterrupt`` or ``SystemExit``: plugin errors are
        reported, and once every plugin had its turn and the hub is no longer the active one,
        the first interrupt (else an application object's first error) is re-raised.
        Without a prior ``startup()`` this does nothing.
        """
        if not self._startup_began:
            return
        self._startup_began = False
        errors: list[BaseException] = []
        try:
            self._shut_down_plugins(errors)
        except BaseException as exc:  # the core's own code interrupted: still deactivate
            errors.append(exc)
        finally:
            _events.deactivate(self)
        # an interrupt wins over an ordinary error: the user asked to stop
        interrupt = next((e for e in errors if not isinstance(e, Exception)), None)
        first_error = interrupt or (errors[0] if errors else None)
        if first_error is not None:
            for other in errors:
                if other is not first_error:
                    first_error.add_note(f"shutting down also raised {other!r}")
            raise first_error

    def _shut_down_plugins(self, errors: list[BaseException]) -> None:
        """Each plugin's ``foundation_shutdown`` (inside the wrappers), whatever the others
        raise; what they raise is appended to ``errors``."""
        with_startup = {i.plugin_name for i in self.pm.hook.foundation_startup.get_hookimpls()}
        every = self.pm.hook.foundation_shutdown.get_hookimpls()
        impls: dict[str, list[Any]] = {}  # a plugin may have several (@hookimpl(specname=...))
        for i in every:
            if not (i.wrapper or i.hookwrapper):
                impls.setdefault(i.plugin_name, []).append(i)
        order = [n for n in impls if n not in with_startup] + self._started
        self._started = []
        # wrappers run around the whole shutdown, outermost first, as pluggy would run them
        opened: list[tuple[Any, bool]] = []
        for wrapper in reversed([i for i in every if i.wrapper or i.hookwrapper]):
            try:
                gen: Any = wrapper.function(*[{"hub": self}[a] for a in wrapper.argnames])  # guarded
                next(gen)
                opened.append((gen, bool(wrapper.hookwrapper)))
            except BaseException as exc:
                errors.append(exc)
        for name in reversed(order):
            for impl in reversed(impls.get(name, ())):  # a plugin's own: as pluggy calls them
                try:
                    impl.function(*[{"hub": self}[a] for a in impl.argnames])  # the guarded function
                except BaseException as exc:
                    errors.append(exc)
        for gen, old_style in reversed(opened):
            try:
                gen.send(pluggy.Result(None, None) if old_style else None)
            except StopIteration:
                pass
            except BaseException as exc:
                errors.append(exc)

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


def _disabled_hint(plugins: Mapping[str, PluginInfo], selection: Selection, name: str) -> str:
    """What a registry adds when ``name`` is not registered: the plugins not active and why,
    and the distribution that would provide ``name``."""
    off = [
        f"{i.name} ({f'failed: {i.error}' if i.status == 'failed' else selection.reason(i.name)})"
        for i in plugins.values()
        if i.status in {"disabled", "not-selected", "failed"}
    ]
    return (f"; plugins not active: {', '.join(off)}" if off else "") + install_hint(name)


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
