"""Composition of resilience patterns around one callable, in one documented order.

``resilient(retry=True, circuit_breaker={"name": "db"}, timeout=2.0)`` or
``hub.pipeline(...)`` returns a decorator. Layers, outermost first (:data:`ORDER`)::

    fallback -> timeout -> retry -> circuit_breaker -> rate_limit -> fn

- fallback is outermost so it can turn any failure of the layers below into a value;
- timeout bounds the whole call, retries and back-off included, and publishes its deadline so
  retry does not start an attempt it cannot finish;
- retry sees each attempt's outcome, including ``CircuitOpenError`` (not retried by default);
- the breaker counts every real attempt and refuses fast while open, before a token is spent;
- the rate limiter is innermost so every attempt that reaches the dependency pays a token.

Each layer is looked up by name in ``hub.patterns`` when the decorator is built, so an
application or third-party override of a pattern applies; policies come from the config
section of the same name. Nothing is looked up per call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ._events import active_hub
from .errors import FoundationError, PolicyError

if TYPE_CHECKING:
    from ._clock import Clock
    from ._hub import Hub

__all__ = ["ORDER", "build_pipeline", "resilient"]

F = TypeVar("F", bound=Callable[..., Any])

#: Layer order, outermost first.
ORDER: tuple[str, ...] = ("fallback", "timeout", "retry", "circuit_breaker", "rate_limit")


def _policy(hub: Hub, name: str, spec: Any) -> Any:
    """``True``: the config section; a mapping: the section with those fields changed; a number
    (timeout only): the timeout in seconds; anything else: the policy object itself."""
    if spec is True or isinstance(spec, Mapping) or (name == "timeout" and isinstance(spec, int | float)):
        config = hub.config if hub.config is not None else hub.configure()
        if name not in config:
            raise FoundationError(
                f"pipeline layer {name!r} wants config section {name!r}, which no active plugin "
                f"declares; pass a policy object instead"
            )
        section = config[name]
        if spec is True:
            return section
        changes = dict(spec) if isinstance(spec, Mapping) else {"timeout": spec}  # validated there
        fields = attrs.fields_dict(type(section))
        for key, value in changes.items():
            if key not in fields:  # evolve's TypeError names __init__, not the layer
                allowed = "a field of " + type(section).__name__ + ": " + ", ".join(sorted(fields))
                raise PolicyError(name, str(key), value, allowed)
        return attrs.evolve(section, **changes)
    return spec


def _check_order(order: Sequence[str]) -> None:
    """A text ``order`` would be read letter by letter, one that is no sequence has no order (a
    set's changes from run to run) or is used up by the first look (a generator), and a name
    given twice would wrap its pattern twice (``retry`` twice: its attempts squared): all are
    refused, naming the order."""
    if (
        isinstance(order, str)
        or not isinstance(order, Sequence)
        or not all(isinstance(name, str) for name in order)
    ):
        raise FoundationError(
            f"pipeline: order must be a sequence of pattern names, outermost first, such as "
            f"('fallback', 'retry'), not {order!r}"
        )
    twice = sorted({name for name in order if order.count(name) > 1})
    if twice:
        raise FoundationError(
            f"pipeline: order names {', '.join(twice)} more than once: {tuple(order)!r}; "
            f"each pattern is one layer"
        )


def build_pipeline(
    hub: Hub,
    *,
    clock: Clock | None = None,
    order: Sequence[str] = ORDER,
    **layers: Any,
) -> Callable[[F], F]:
    """The decorator for ``layers`` (pattern name -> policy, ``True``, or field overrides)."""
    _check_order(order)
    unknown = sorted(set(layers) - set(order))
    if unknown:
        raise FoundationError(
            f"pipeline: unknown layer(s) {', '.join(unknown)}; known: {', '.join(order)} "
            f"(pass order=... to place other patterns)"
        )
    wrappers: list[Callable[[Any], Any]] = []
    for name in order:
        spec = layers.get(name)
        if spec is None or spec is False:
            continue
        factory = hub.patterns.get(name)
        policy = _policy(hub, name, spec)
        wrappers.append(factory(policy) if clock is None else factory(policy, clock=clock))

    def decorate(fn: F) -> F:
        protected: Any = fn
        for wrapper in reversed(wrappers):
            protected = wrapper(protected)
        return protected  # type: ignore[no-any-return]

    return decorate


def resilient(
    *,
    hub: Hub | None = None,
    clock: Clock | None = None,
    order: Sequence[str] = ORDER,
    **layers: Any,
) -> Callable[[F], F]:
    """Decorator form of :meth:`Hub.pipeline` on the given or the active hub::

    @resilient(retry=True, circuit_breaker={"name": "db"}, timeout=2.0)
    def query(sql): ...
    """
    hub = hub or active_hub()
    if hub is None:
        raise FoundationError("resilient(): no started hub; call foundation_core.start() first or pass hub=")
    return build_pipeline(hub, clock=clock, order=order, **layers)
