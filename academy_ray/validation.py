"""Checks an action call's arguments against the action's signature and type annotations (pydantic)."""

from __future__ import annotations

import functools
import inspect
import logging
import typing
from collections.abc import Callable
from typing import Any

import pydantic

from academy_ray.exception import ActionArgumentError

logger = logging.getLogger(__name__)

_CONFIG = pydantic.ConfigDict(arbitrary_types_allowed=True)
_Adapter = pydantic.TypeAdapter[Any]


def _adapter_for(annotation: Any) -> _Adapter | None:
    if annotation is inspect.Parameter.empty or annotation is Any:
        return None
    try:
        return pydantic.TypeAdapter(annotation, config=_CONFIG)
    except Exception:  # noqa: BLE001 - an annotation pydantic cannot handle is simply not validated
        try:
            return pydantic.TypeAdapter(annotation)
        except Exception:  # noqa: BLE001
            logger.debug("annotation %r is not validated", annotation)
            return None


def _first_problem(error: pydantic.ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    location = ".".join(str(part) for part in first.get("loc", ()))
    where = f" at {location}" if location else ""
    return f"{first['msg']}{where} (got {type(first.get('input')).__name__})"


class _Shape:
    """What validating one action function needs: its signature and an adapter per annotated parameter."""

    def __init__(self, method: Callable[..., Any]) -> None:
        self.signature = inspect.signature(method)
        try:
            hints = typing.get_type_hints(method)
        except Exception:  # noqa: BLE001 - unresolvable forward references: validate arity only
            hints = {}
        self.adapters: dict[str, tuple[inspect._ParameterKind, _Adapter]] = {}
        parameters = list(self.signature.parameters.values())[1:]
        for parameter in parameters:
            adapter = _adapter_for(hints.get(parameter.name, inspect.Parameter.empty))
            if adapter is not None:
                self.adapters[parameter.name] = (parameter.kind, adapter)
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        self.arity = len(parameters) if all(p.kind in positional for p in parameters) else None
        """Number of parameters when all are plain positional ones: a call passing exactly that many
        positional arguments binds trivially, so the validator skips `inspect.Signature.bind` for it."""
        self.by_position = [
            (index, p.name, self.adapters[p.name][1])
            for index, p in enumerate(parameters)
            if p.name in self.adapters
        ]


@functools.cache
def _shape_of(method: Callable[..., Any]) -> _Shape:
    """One `_Shape` per action function, shared by every agent of the class (10,000 co-hosted agents of one
    class build their adapters once, not once each)."""
    return _Shape(method)


class ActionValidator:
    """Validates calls of one action of one agent (the adapters are built once per action function).

    Arity and names are checked with `inspect.Signature.bind`; annotated parameters are validated (and
    coerced, as pydantic does in lax mode) with a `pydantic.TypeAdapter`. Unannotated parameters, ``Any`` and
    annotations pydantic cannot build a schema for pass through unchanged.
    """

    def __init__(self, agent: str, action: str, method: Callable[..., Any]) -> None:
        self.agent = agent
        self.action = action
        shape = _shape_of(method)
        self.signature = shape.signature
        self.adapters = shape.adapters
        self._arity = shape.arity
        self._by_position = shape.by_position

    def __call__(
        self, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Returns the validated ``(args, kwargs)`` to call the bound method with.

        Raises:
            ActionArgumentError: Naming the parameter at fault.
        """
        if not kwargs and len(args) == self._arity:
            return self._validate_positional(args), kwargs
        try:
            bound = self.signature.bind(owner, *args, **kwargs)
        except TypeError as error:
            parameter = _parameter_named_in(str(error))
            raise ActionArgumentError(self.agent, self.action, parameter, str(error)) from None
        if not self.adapters:
            return args, kwargs
        arguments = bound.arguments
        for name, (kind, adapter) in self.adapters.items():
            if name not in arguments:
                continue
            value = arguments[name]
            try:
                if kind is inspect.Parameter.VAR_POSITIONAL:
                    arguments[name] = tuple(adapter.validate_python(item) for item in value)
                elif kind is inspect.Parameter.VAR_KEYWORD:
                    arguments[name] = {k: adapter.validate_python(v) for k, v in value.items()}
                else:
                    arguments[name] = adapter.validate_python(value)
            except pydantic.ValidationError as error:
                raise ActionArgumentError(
                    self.agent, self.action, name, _first_problem(error)
                ) from None
        return bound.args[1:], bound.kwargs

    def _validate_positional(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Validates a call that passes every parameter by position (the common case), without binding."""
        if not self._by_position:
            return args
        validated = list(args)
        for index, name, adapter in self._by_position:
            try:
                validated[index] = adapter.validate_python(args[index])
            except pydantic.ValidationError as error:
                raise ActionArgumentError(
                    self.agent, self.action, name, _first_problem(error)
                ) from None
        return tuple(validated)


def _parameter_named_in(message: str) -> str | None:
    """Pulls the parameter name out of `inspect.Signature.bind`'s messages ("missing ... argument: 'x'")."""
    if "'" in message:
        return message.split("'")[1]
    return None
