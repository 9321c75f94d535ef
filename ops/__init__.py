"""Operators' tooling: the ``prequal-ops`` command line and the work only it does.

Outbox status, replay and purge; reading and redriving dead letters; progress bars. The
top layer: it imports outbox, messaging, schema and runtime; no service imports it.
"""
