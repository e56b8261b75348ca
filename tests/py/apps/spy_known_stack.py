"""A process blocked at a known line in a known call chain, for `apiprof dump`: the main
thread waits in leaf() (marker WAIT), called by middle() (CALL-LEAF), called by outer()
(CALL-MIDDLE), called by the module (CALL-OUTER); a second thread named "spinner" runs."""

import sys
import threading


def spin() -> None:
    while True:
        sum(i for i in range(1000))


def leaf() -> None:
    ready = threading.Event()
    print("ready", flush=True)
    ready.wait()  # WAIT


def middle() -> None:
    leaf()  # CALL-LEAF


def outer() -> None:
    middle()  # CALL-MIDDLE


threading.Thread(target=spin, name="spinner", daemon=True).start()
if len(sys.argv) > 1:
    sys.exit(0)
outer()  # CALL-OUTER
