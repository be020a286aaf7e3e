"""A supervisord extension that keeps every `[fcgi-program]` listening socket open for its whole life.

supervisord reference-counts an fcgi-program's socket by its running processes and closes it when
the last one dies: if every API process crashes at once, clients are refused until one is spawned
again (about one time in five in tests/test_supervision.py), connections waiting in the backlog are
reset, and the freed port can be taken by an outgoing connection so the API can never bind it again.
Holding one reference here keeps the port and its backlog, so requests wait for the restarted API.
supervisord has no option for this; an rpcinterface factory is its documented extension point and
runs after the process groups (and their sockets) exist.
"""

from __future__ import annotations

from supervisor import events


class SocketHolder:
    """Exposed over supervisord's XML-RPC as `sockets.held()` so an operator can check it."""

    def __init__(self, supervisord) -> None:
        self._refs = {}
        for name, group in supervisord.process_groups.items():
            manager = getattr(group, "socket_manager", None)
            if manager is not None:
                self._refs[name] = manager.get_socket()
        # Let go when supervisord starts stopping: the socket then closes with the last API
        # process while supervisord's log is still open. Held until interpreter exit instead,
        # its close was logged to a closed file and printed a traceback on every Ctrl-C.
        events.subscribe(events.SupervisorStoppingEvent, self._release)

    def _release(self, event) -> None:
        self._refs.clear()

    def held(self) -> list[str]:
        return sorted(self._refs)


def make_interface(supervisord, **config) -> SocketHolder:
    return SocketHolder(supervisord)
