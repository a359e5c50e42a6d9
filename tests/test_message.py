"""ChatMessage: the pure class and the native one must behave the same."""

from __future__ import annotations

import copy
import pickle
from collections import OrderedDict
from types import MappingProxyType

import pytest

import turnlog
import turnlog._message
from conftest import in_ci


def _native_class():
    try:
        from turnlog import _native
    except ImportError:
        if in_ci():
            pytest.fail("turnlog._native is not built, and CI is set", pytrace=False)
        pytest.skip("turnlog._native is not built")
    return _native.ChatMessage


@pytest.fixture(params=["pure", "native"])
def cls(request):
    if request.param == "pure":
        return turnlog._message.ChatMessage
    return _native_class()


def test_public_class_is_the_one_in_use():
    expected = "rust" if turnlog._impl.native is not None else "python"
    assert expected == turnlog.IMPLEMENTATION
    if turnlog.IMPLEMENTATION == "python":
        assert turnlog.ChatMessage is turnlog._message.ChatMessage
    else:
        assert turnlog.ChatMessage is turnlog._impl.native.ChatMessage


def test_class_name(cls):
    assert cls.__name__ == "ChatMessage"


def test_constructor_positional_and_keywords(cls):
    message = cls("user", "hello")
    assert message.role == "user"
    assert message.content == "hello"
    assert message.extra == {}
    message = cls(role="assistant", content="hi", name="bot", n=3)
    assert (message.role, message.content) == ("assistant", "hi")
    assert message.extra == {"name": "bot", "n": 3}
    assert list(message.extra) == ["name", "n"]


def test_constructor_keeps_any_extra_value(cls):
    extra = {"tools": [{"id": 1, "args": {"x": None}}], "ok": True, "score": 0.5}
    message = cls("tool", "", **extra)
    assert message.content == ""
    assert message.extra == extra
    assert list(message.extra) == ["tools", "ok", "score"]


@pytest.mark.parametrize(
    ("role", "content"),
    [(1, "x"), ("user", None), (None, None), (b"user", "x"), ("user", b"x"), ("user", ["x"])],
)
def test_constructor_type_errors(cls, role, content):
    with pytest.raises(TypeError):
        cls(role, content)


def test_constructor_missing_arguments(cls):
    with pytest.raises(TypeError):
        cls("user")
    with pytest.raises(TypeError):
        cls()


def test_extra_is_live(cls):
    message = cls("user", "hi")
    assert message.extra == {}
    message.extra["name"] = "alice"
    assert message.extra == {"name": "alice"}
    assert message.to_dict() == {"role": "user", "content": "hi", "name": "alice"}
    other = cls("user", "hi", a=1)
    other.extra["b"] = 2
    del other.extra["a"]
    assert other.to_dict() == {"role": "user", "content": "hi", "b": 2}


def test_to_dict_order_and_copy(cls):
    message = cls("assistant", "x", zeta=1, alpha=2, mid={"k": [1, 2]})
    result = message.to_dict()
    assert type(result) is dict
    assert list(result.items()) == [
        ("role", "assistant"),
        ("content", "x"),
        ("zeta", 1),
        ("alpha", 2),
        ("mid", {"k": [1, 2]}),
    ]
    result["role"] = "changed"
    result["new"] = 1
    assert message.role == "assistant"
    assert "new" not in message.extra
    assert message.to_dict() is not message.to_dict()


def test_from_dict(cls):
    data = {"name": "bot", "role": "assistant", "x": [1], "content": "hi"}
    message = cls.from_dict(data)
    assert type(message) is cls
    assert (message.role, message.content) == ("assistant", "hi")
    assert list(message.extra.items()) == [("name", "bot"), ("x", [1])]
    assert list(message.to_dict()) == ["role", "content", "name", "x"]
    assert data == {"name": "bot", "role": "assistant", "x": [1], "content": "hi"}


@pytest.mark.parametrize(
    "mapping",
    [
        OrderedDict([("role", "user"), ("content", "c"), ("k", 1)]),
        MappingProxyType({"role": "user", "content": "c", "k": 1}),
    ],
)
def test_from_dict_accepts_mappings(cls, mapping):
    message = cls.from_dict(mapping)
    assert message.to_dict() == {"role": "user", "content": "c", "k": 1}


@pytest.mark.parametrize("data", [{"content": "x"}, {"role": "user"}, {}, {"name": "x"}])
def test_from_dict_missing_field(cls, data):
    with pytest.raises(ValueError):
        cls.from_dict(data)


@pytest.mark.parametrize(
    "data",
    [
        {"role": 1, "content": "x"},
        {"role": "user", "content": None},
        {"role": "user", "content": ["x"]},
        {"role": "user", "content": "x", 1: "y"},
    ],
)
def test_from_dict_wrong_types(cls, data):
    with pytest.raises(TypeError):
        cls.from_dict(data)


@pytest.mark.parametrize("data", [None, "role", [("role", "u"), ("content", "c")], 3])
def test_from_dict_not_a_mapping(cls, data):
    with pytest.raises(TypeError):
        cls.from_dict(data)


@pytest.mark.parametrize("role", ["system", "user", "assistant", "tool"])
def test_role_constructors(cls, role):
    message = getattr(cls, role)("text")
    assert type(message) is cls
    assert (message.role, message.content, message.extra) == (role, "text", {})
    assert message == cls(role, "text")


def test_equality_by_value(cls):
    assert cls("user", "a") == cls("user", "a")
    assert cls("user", "a", x=1) == cls("user", "a", x=1)
    assert cls("user", "a") != cls("user", "b")
    assert cls("user", "a") != cls("assistant", "a")
    assert cls("user", "a", x=1) != cls("user", "a", x=2)
    assert cls("user", "a", x=1) != cls("user", "a")
    assert cls("user", "a") != {"role": "user", "content": "a"}
    assert cls("user", "a") != "user"


def test_empty_extra_equals_no_extra(cls):
    plain = cls("user", "a")
    touched = cls("user", "a")
    assert touched.extra == {}  # materialises an empty dict
    assert plain == touched
    assert touched == plain
    assert cls("user", "a", **{}) == plain
    emptied = cls("user", "a", x=1)
    del emptied.extra["x"]
    assert emptied == plain


def test_unhashable(cls):
    with pytest.raises(TypeError):
        hash(cls("user", "a"))
    with pytest.raises(TypeError):
        {cls("user", "a")}


def test_repr(cls):
    assert repr(cls("user", "it's")) == "ChatMessage(role='user', content=\"it's\")"
    assert (
        repr(cls("assistant", "x", name="bot", n=[1]))
        == "ChatMessage(role='assistant', content='x', extra={'name': 'bot', 'n': [1]})"
    )


def test_pickle_round_trip(cls):
    # Both classes pickle by reference to their own module, so each round-trips to itself.
    message = cls("assistant", "héllo\n", name="bot", data={"a": [1, 2.5, None, True]})
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        restored = pickle.loads(pickle.dumps(message, protocol=protocol))
        assert type(restored) is cls
        assert restored == message
        assert list(restored.extra) == ["name", "data"]
        assert restored.extra is not message.extra
    assert pickle.loads(pickle.dumps(cls("user", "x"))) == cls("user", "x")


def test_deepcopy(cls):
    message = cls("user", "x", data={"a": [1]})
    duplicate = copy.deepcopy(message)
    assert duplicate == message
    duplicate.extra["data"]["a"].append(2)
    assert message.extra == {"data": {"a": [1]}}


def test_subclasses_build_and_pickle_as_themselves(cls):
    class Tagged(cls):
        pass

    made = [
        Tagged("user", "a", n=1),
        Tagged.from_dict({"role": "user", "content": "a", "n": 1}),
        Tagged.user("a"),
    ]
    assert all(type(message) is Tagged for message in made)
    assert made[0] == made[1] == cls("user", "a", n=1)
    # A local class cannot be pickled by name; copy goes through the same __reduce__.
    for again in (copy.copy(made[1]), copy.deepcopy(made[1])):
        assert type(again) is Tagged and again == made[1]
    assert type(cls.user("a")) is cls


@pytest.mark.parametrize("field", ["role", "content"])
def test_role_and_content_stay_strings(cls, field):
    message = cls("user", "a")
    with pytest.raises(TypeError, match=f"ChatMessage {field} must be str, not int"):
        setattr(message, field, 1)
    assert message == cls("user", "a")
    setattr(message, field, "b")
    assert getattr(message, field) == "b"


def test_lone_surrogate_field_names_are_refused_only_when_written(cls):
    message = cls.from_dict({"role": "user", "content": "a", "\ud800": 1})
    assert message.extra == {"\ud800": 1}
