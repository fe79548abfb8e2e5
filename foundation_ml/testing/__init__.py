"""A test kit for transport authors: ``check_transport(name)`` holds a registered transport to
the contract of docs/transports.md, with real clients against real servers.

Each check serves either the runtime (``MLRuntime`` with small ``FunctionModel``s) or a handler
of the kit's own (which records what the transport handed it, answers out of order, or never
answers), connects the transport's own client, and compares what came back with what was sent
and with the runtime's answer in-process. Every check runs, whatever failed before it, and
whatever a check started is ended however it ends (``_owned``); a failure raises
``TransportCheckFailed`` (an ``AssertionError``, so pytest reports it) listing each failed check
by name with what was wrong.

```python
from foundation_ml.testing import check_transport

def test_my_transport_keeps_the_contract():
    check_transport("uds")  # a hub with the installed plugins, or hub=... for one of your own
```
"""

from ._checks import CHECKS
from ._kit import TransportCheckFailed
from ._run import check_transport

__all__ = ["CHECKS", "TransportCheckFailed", "check_transport"]
