"""The shm client's control calls, ``metadata`` and ``stats`` (spec section 5: METADATA_REQUEST,
STATS_REQUEST): a request with no tensors, answered by a JSON document in the response's text."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from foundation_ml import InferenceResponse
from foundation_ml.errors import InferenceError, InternalError

from . import _layout as L
from ._client_write import write
from ._codec import request_payload_size
from ._gone import Lender, _GoneAtConnect, once_more

if TYPE_CHECKING:
    from ._client import ShmClient

__all__ = ["control"]


def control(client: ShmClient, kind: int, model: str, timeout: float | None) -> dict[str, Any]:
    """The document ``client``'s server answers a control request of ``kind`` for ``model`` ("":
    none) with, sent once more (``once_more``) if its server was gone before a handler saw it."""
    deadline = client._deadline(0, timeout)
    rid = next(client._ids)
    try:
        resp = once_more(
            client, lambda lender: _control_once(client, kind, model, rid, deadline, lender), deadline
        )
        what = f"the server's {L.MessageKind(kind).name} document"
        try:
            doc = json.loads(str(resp.parameters.get("__text__", "")))
        except ValueError:
            raise InternalError(f"{what} is not JSON") from None
        except RecursionError:  # a server's text (at most 1 MiB) nesting arrays or objects
            raise InternalError(f"{what} nests too deeply to be read") from None
        if not isinstance(doc, dict):
            raise InternalError("the server's document is not a JSON object")
        return doc
    except InferenceError as exc:  # as infer's
        if isinstance(exc, _GoneAtConnect):
            raise exc.unsent().with_call(model, rid) from None
        exc.with_call(model, rid)
        raise


def _control_once(
    client: ShmClient, kind: int, model: str, rid: int, deadline: int, lender: Lender
) -> InferenceResponse:
    """One attempt of ``control``: a channel of ``lender`` (see ``ShmClient._send``), the request
    written and sent, its answer."""
    ch = lender.take(deadline)
    try:
        size = L.MSG_HEADER_SIZE + request_payload_size(0, 0, 0)
        write(client, ch, [], size, rid, model, "", deadline, kind=kind)
        return client._exchange(ch, rid, model, deadline, retry=True)
    finally:
        lender.give(ch)
