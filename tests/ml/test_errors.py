"""``InferenceError``: its fields, and ``with_call`` naming the call an error fails."""

from __future__ import annotations

import pickle

from foundation_ml.errors import InferenceError, ModelNotFound, ServerUnavailable


def test_with_call_names_the_call_where_the_error_does_not() -> None:
    exc = ServerUnavailable("the client of 'x' is closed")
    assert exc.with_call("m", 7) is exc
    assert (exc.model, exc.request_id, exc.message) == ("m", 7, "the client of 'x' is closed")
    assert str(exc) == "model 'm': the client of 'x' is closed"
    again = pickle.loads(pickle.dumps(exc))  # what crosses a process boundary as an object
    assert type(again) is ServerUnavailable
    assert (again.model, again.request_id, str(again)) == ("m", 7, str(exc))


def test_with_call_keeps_what_the_error_names() -> None:
    exc = ModelNotFound("no such model", model="a", request_id=3)
    exc.with_call("b", 4)
    assert (exc.model, exc.request_id, str(exc)) == ("a", 3, "model 'a': no such model")
    half = InferenceError("x", request_id=5).with_call("m", 6)
    assert (half.model, half.request_id, str(half)) == ("m", 5, "model 'm': x")


def test_with_call_takes_no_model_or_id_that_is_not_one() -> None:
    """A request may hold anything a caller put there: the fields stay a str and an int."""
    exc = InferenceError("x").with_call(5, "7")  # type: ignore[arg-type]
    assert (exc.model, exc.request_id, str(exc)) == ("", 0, "x")
    assert InferenceError("x").with_call("", 0).args == ("x",)
