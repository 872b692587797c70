"""mediatord: a networked PSCI / EEMI mediator daemon.

The functional core lives in :mod:`mediatord.core` (pure, synchronous, no I/O);
the gRPC shell in :mod:`mediatord.server`; board files in :mod:`mediatord.board`.
"""

__version__ = "0.1.0"
