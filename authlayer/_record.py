"""Frozen value classes, as ``@dataclass(frozen=True)`` makes them, at a fraction of the cost.

``@record`` gives a class with annotated fields what a frozen dataclass has: an ``__init__``
taking the fields in order (by position or by name, with their defaults), a ``__repr__``
without the fields marked ``field(repr=False)``, ``__eq__`` and ``__hash__`` over the fields
not marked ``field(compare=False)``, assignment and deletion raising
``dataclasses.FrozenInstanceError``, ``__match_args__`` and ``__replace__``. A method the class
defines itself is kept, as a dataclass keeps it.

Why not dataclasses: they build each method from source with ``exec`` when the class is
defined (about 0.4 ms a class), and importing them imports ``inspect``, ``ast`` and ``dis``
(about 5 ms); a cached ``authlayer token`` defines a dozen such classes before it prints a
token. These methods are closures over the field names, made without compiling anything.

A record still is a dataclass to whoever asks: ``dataclasses.fields``, ``replace``, ``asdict``
and ``is_dataclass`` work, through ``__dataclass_fields__`` and ``__dataclass_params__``, which
dataclasses itself makes (from the same fields) the first time they are read. Type checkers see
a frozen dataclass (``dataclass_transform``). This module imports nothing at run time.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not from typing: a leaf that costs nothing to import

if TYPE_CHECKING:
    from dataclasses import replace as replace
    from typing import Any, TypeVar

    from typing_extensions import dataclass_transform

    T = TypeVar("T")
else:

    def dataclass_transform(**_options):
        return lambda decorator: decorator

    def replace(obj, /, **changes):
        """``dataclasses.replace``: a copy of ``obj`` with ``changes``; for a record, without
        importing dataclasses. (Type checkers see ``dataclasses.replace``, which checks the
        field names and their types.)"""
        if hasattr(type(obj), "__record_fields__"):
            return obj.__replace__(**changes)
        import dataclasses

        return dataclasses.replace(obj, **changes)


__all__ = ["field", "field_names", "record", "replace"]


class _Missing:
    def __repr__(self) -> str:
        return "<no default>"


MISSING: Any = _Missing()


class Field:
    """What ``field(...)`` declares about one field of a record."""

    __slots__ = ("compare", "default", "repr")

    def __init__(self, default: Any, repr: bool, compare: bool) -> None:
        self.default = default
        self.repr = repr
        self.compare = compare


def field(*, default: Any = MISSING, repr: bool = True, compare: bool = True) -> Any:
    """A field's default, and whether it shows in the ``repr`` and counts for ``==`` and
    ``hash`` (as ``dataclasses.field`` has them)."""
    return Field(default, repr, compare)


def _is_class_var(annotation: Any) -> bool:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return text.startswith(("ClassVar", "typing.ClassVar"))


def _annotations(cls: type) -> dict[str, Any]:
    """The annotations ``cls`` itself declares (not its bases'), on every Python this supports;
    strings under ``from __future__ import annotations``, which every record's module uses."""
    if "__annotations__" in cls.__dict__:
        return cls.__dict__["__annotations__"]  # type: ignore[no-any-return]  # noqa: RUF063
    if "__annotate__" in cls.__dict__:  # Python 3.14+: made when first read
        return dict(cls.__annotations__)
    return {}


def _frozen(message: str) -> Exception:
    from dataclasses import FrozenInstanceError  # only when someone tries: it costs start-up

    return FrozenInstanceError(message)


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen record of its annotated fields (see the module's docstring)."""
    if "__slots__" in cls.__dict__:
        raise TypeError(f"{cls.__name__}: a record keeps its fields in __dict__, not slots")
    fields: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        fields.update(base.__dict__.get("__record_fields__", {}))
    for name, annotation in _annotations(cls).items():
        if _is_class_var(annotation):
            continue
        value = cls.__dict__.get(name, MISSING)
        spec = value if isinstance(value, Field) else Field(value, True, True)
        if spec.default is MISSING:
            if name in cls.__dict__:
                delattr(cls, name)
        else:
            setattr(cls, name, spec.default)
        fields[name] = spec
    names = tuple(fields)
    defaults = {n: f.default for n, f in fields.items() if f.default is not MISSING}
    for before, after in zip(names, names[1:]):
        if before in defaults and after not in defaults:
            raise TypeError(f"{cls.__name__}: non-default argument {after!r} follows default "
                            f"argument {before!r}")
    shown = tuple(n for n, f in fields.items() if f.repr)
    compared = tuple(n for n, f in fields.items() if f.compare)
    known = frozenset(names)
    title = cls.__name__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(names):
            raise TypeError(f"{title}() takes {len(names)} arguments but {len(args)} were given")
        given = dict(zip(names, args))
        for key in kwargs:
            if key in given:
                raise TypeError(f"{title}() got multiple values for argument {key!r}")
            if key not in known:
                raise TypeError(f"{title}() got an unexpected keyword argument {key!r}")
        given.update(kwargs)
        state = self.__dict__
        for name in names:
            value = given.get(name, MISSING)
            if value is MISSING:
                value = defaults.get(name, MISSING)
                if value is MISSING:
                    raise TypeError(f"{title}() missing required argument: {name!r}")
            state[name] = value

    def __repr__(self: Any) -> str:
        shown_fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in shown)
        return f"{self.__class__.__qualname__}({shown_fields})"

    def key(self: Any) -> tuple[Any, ...]:
        return tuple([getattr(self, n) for n in compared])

    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is self.__class__:
            return key(self) == key(other)
        return NotImplemented

    def __hash__(self: Any) -> int:
        return hash(key(self))

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in known:
            raise _frozen(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in known:
            raise _frozen(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    def __replace__(self: Any, **changes: Any) -> Any:
        for name in names:
            if name not in changes:
                changes[name] = getattr(self, name)
        return self.__class__(**changes)

    methods: dict[str, Any] = {
        "__init__": __init__, "__repr__": __repr__, "__eq__": __eq__,
        "__setattr__": __setattr__, "__delattr__": __delattr__, "__replace__": __replace__,
        "__match_args__": names, "__record_fields__": fields,
        "__dataclass_fields__": _AsDataclass("__dataclass_fields__"),
        "__dataclass_params__": _AsDataclass("__dataclass_params__"),
    }
    own_hash = cls.__dict__.get("__hash__", MISSING)
    if own_hash is MISSING or (own_hash is None and "__eq__" in cls.__dict__):
        methods["__hash__"] = __hash__  # as a frozen dataclass: unless the class has its own
    for name in ("__setattr__", "__delattr__"):
        if name in cls.__dict__:
            raise TypeError(f"{cls.__name__}: a frozen record cannot define {name}")
    for name, method in methods.items():
        if name in cls.__dict__ and name != "__hash__":  # the class's own method is kept
            continue
        if callable(method):
            method.__qualname__ = f"{cls.__qualname__}.{name}"
        setattr(cls, name, method)
    return cls


class _AsDataclass:
    """``__dataclass_fields__`` or ``__dataclass_params__`` of a record, made by dataclasses
    the first time one of them is read (then kept on the class)."""

    def __init__(self, attribute: str) -> None:
        self.attribute = attribute

    def __get__(self, instance: Any, owner: type) -> Any:
        import dataclasses

        fields: dict[str, Field] = owner.__record_fields__  # type: ignore[attr-defined]
        annotations = {}
        for klass in reversed(owner.__mro__):
            annotations.update(_annotations(klass))
        shadow = dataclasses.make_dataclass(owner.__name__, [
            (name, annotations.get(name, "Any"),
             dataclasses.field(repr=spec.repr, compare=spec.compare)
             if spec.default is MISSING else
             dataclasses.field(default=spec.default, repr=spec.repr, compare=spec.compare))
            for name, spec in fields.items()], frozen=True)
        for name in ("__dataclass_fields__", "__dataclass_params__"):
            setattr(owner, name, getattr(shadow, name))
        return getattr(shadow, self.attribute)


def field_names(value: Any) -> tuple[str, ...]:
    """The field names of a record (or of its class), in order."""
    return tuple(value.__record_fields__)


