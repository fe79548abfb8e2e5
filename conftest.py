"""Repository-wide pytest setup (every test directory is below this one)."""

from __future__ import annotations

import signal

# pytest started with SIGINT ignored (a background job of a non-interactive shell, nohup, some CI
# runners) inherits that: Python then installs no KeyboardInterrupt handler, and every test that
# interrupts a call (_thread.interrupt_main, a SIGINT to itself) sees nothing happen and fails.
# Python's own handler is what a terminal gives it, and what those tests are about.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
