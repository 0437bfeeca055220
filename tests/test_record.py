"""``authlayer._record.record`` behaves as ``@dataclass(frozen=True)`` does: each check runs on a
record and on the same class made a real frozen dataclass, and expects the same outcome."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import subprocess
import sys
from typing import Any, ClassVar, Optional

import pytest

from authlayer import _record
from authlayer._actions import Call, Send, Sleep
from authlayer.profile import Profile
from authlayer.schema import FlowContext
from authlayer.token import TokenResult


def _declare(name: str, decorate: Any, field: Any) -> Any:
    class Entry:
        """A value with a hidden field and one that does not count for equality."""

        kind: str
        ref: Any = field(repr=False)
        key: str = ""
        path: Optional[str] = None
        note: str = field(default="-", compare=False)
        LIMIT: ClassVar[int] = 3

        def describe(self) -> str:
            return f"{self.kind}:{self.key}"

    Entry.__qualname__ = Entry.__name__ = name  # pickle finds it by this module-level name
    return decorate(Entry)


RECORD = _declare("RECORD", _record.record, _record.field)
DATACLASS = _declare("DATACLASS", dataclasses.dataclass(frozen=True), dataclasses.field)
BOTH = pytest.mark.parametrize("cls", [RECORD, DATACLASS], ids=["record", "dataclass"])


@BOTH
def test_arguments_by_position_and_name_with_defaults(cls: Any) -> None:
    entry = cls("env", "SECRET", key="client_secret")
    assert (entry.kind, entry.ref, entry.key, entry.path, entry.note) == (
        "env", "SECRET", "client_secret", None, "-")
    assert entry.describe() == "env:client_secret"
    assert cls.LIMIT == 3
    assert cls.key == ""  # a default stays on the class, as a dataclass leaves it
    assert "ref" not in vars(cls)  # a field without a default has no class attribute


@BOTH
@pytest.mark.parametrize(("args", "kwargs"), [
    ((), {}),  # missing kind and ref
    (("a",), {}),
    (("a", "b", "c", "d", "e", "f"), {}),  # too many
    (("a", "b"), {"kind": "x"}),  # twice
    (("a", "b"), {"other": 1}),  # unknown
    (("a", "b"), {"LIMIT": 1}),  # a ClassVar is no field
])
def test_wrong_arguments_are_a_type_error(cls: Any, args: tuple[Any, ...],
                                          kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        cls(*args, **kwargs)


@BOTH
def test_repr_hides_what_is_marked_hidden(cls: Any) -> None:
    assert repr(cls("env", "hunter2", "k")) == (
        f"{cls.__qualname__}(kind='env', key='k', path=None, note='-')")
    assert "hunter2" not in repr(cls("value", "hunter2"))


@BOTH
def test_equality_and_hash_leave_out_what_does_not_compare(cls: Any) -> None:
    a, b = cls("env", "X", note="one"), cls("env", "X", note="two")
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b, cls("env", "Y")}) == 2
    assert a != cls("env", "Y")
    assert a != ("env", "X", "", None)
    assert a.__eq__(object()) is NotImplemented


@BOTH
def test_frozen(cls: Any) -> None:
    entry = cls("env", "X")
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'kind'"):
        entry.kind = "file"
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.other = 1
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot delete field 'kind'"):
        del entry.kind
    assert entry.kind == "env"


@BOTH
def test_dataclasses_functions_work(cls: Any) -> None:
    entry = cls("env", "X", key="k")
    assert dataclasses.is_dataclass(entry)
    assert dataclasses.is_dataclass(cls)
    assert [f.name for f in dataclasses.fields(cls)] == ["kind", "ref", "key", "path", "note"]
    assert [f.repr for f in dataclasses.fields(entry)] == [True, False, True, True, True]
    changed = dataclasses.replace(entry, key="other")
    assert type(changed) is cls
    assert (changed.kind, changed.ref, changed.key) == ("env", "X", "other")
    assert dataclasses.asdict(entry) == {"kind": "env", "ref": "X", "key": "k", "path": None,
                                         "note": "-"}
    assert dataclasses.astuple(entry) == ("env", "X", "k", None, "-")
    assert cls.__dataclass_params__.frozen
    assert _record.replace(entry, path="/p") == cls("env", "X", key="k", path="/p")
    if sys.version_info >= (3, 10) or cls is RECORD:  # dataclasses add it from Python 3.10
        assert cls.__match_args__ == ("kind", "ref", "key", "path", "note")


@BOTH
def test_copies_and_pickles(cls: Any) -> None:
    entry = cls("env", "X", key="k", note="n")
    pickled = pickle.loads(pickle.dumps(entry))  # noqa: S301 - our own bytes
    for other in (copy.copy(entry), copy.deepcopy(entry), pickled):
        assert other == entry
        assert other.note == "n"
        with pytest.raises(dataclasses.FrozenInstanceError):
            other.kind = "file"


@pytest.mark.skipif(sys.version_info < (3, 13), reason="copy.replace is new in Python 3.13")
@BOTH
def test_copy_replace(cls: Any) -> None:
    assert copy.replace(cls("env", "X"), key="k") == cls("env", "X", key="k")  # type: ignore[attr-defined]


def test_a_plain_subclass_may_add_attributes_as_with_a_dataclass() -> None:
    for cls in (RECORD, DATACLASS):
        class Sub(cls):  # type: ignore[misc, valid-type]
            pass

        sub = Sub("env", "X")
        sub.extra = 1  # not a field: allowed, as a frozen dataclass allows it in a subclass
        with pytest.raises(dataclasses.FrozenInstanceError):
            sub.kind = "file"
        assert sub.extra == 1


def test_the_class_keeps_its_own_methods() -> None:
    @_record.record
    class Odd:
        value: int

        def __repr__(self) -> str:
            return "odd"

        def __eq__(self, other: object) -> bool:
            return True

    assert repr(Odd(1)) == "odd"
    assert Odd(1) == Odd(2)
    assert hash(Odd(1)) == hash(Odd(1))  # frozen, with __eq__: hashed by its fields


def test_a_required_field_after_a_default_is_refused() -> None:
    with pytest.raises(TypeError, match="non-default argument 'b' follows default argument 'a'"):
        @_record.record
        class Wrong:
            a: int = 0
            b: int  # type: ignore[misc]


def test_authlayers_values_are_records_and_still_dataclasses() -> None:
    result = TokenResult("secret-token", 2, 1, refresh_token="rt")
    assert "secret-token" not in repr(result)
    assert "rt" not in repr(result)
    assert dataclasses.replace(result, expires_on=3).expires_on == 3
    assert "profile" in {f.name for f in dataclasses.fields(FlowContext)}
    assert _record.field_names(Profile)[:3] == ("name", "flow", "scopes")


def test_actions_compare_freeze_and_show_as_before() -> None:
    assert Sleep(5.0, "waiting") == Sleep(5.0)
    assert hash(Sleep(5.0, "waiting")) == hash(Sleep(5.0))
    assert Sleep(5.0) != Sleep(6.0)
    assert repr(Sleep(1.5, "why")) == "Sleep(seconds=1.5, why='why')"
    fn = object
    assert Call(fn) == Call(fn)
    assert Call(fn) != Send(fn)  # type: ignore[arg-type]
    assert repr(Send("r")) == "Send(request='r')"  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Sleep(1.0).seconds = 2.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del Call(fn).fn


def test_records_do_not_import_dataclasses() -> None:
    """Defining and using records costs no dataclasses import (it is what they are for)."""
    probe = ("import sys\nfrom authlayer import _record\n"
             "@_record.record\nclass V:\n    a: int\n    b: str = 'x'\n"
             "v = _record.replace(V(1), b='y')\n"
             "print(repr(v), v == V(1, 'y'), hash(v) == hash(V(1, 'y')), "
             "'dataclasses' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip().endswith("V(a=1, b='y') True True False")
