"""The transactional outbox: append events in the caller's transaction, relay them.

The polling relay, the Debezium relay's confirmer and the relay's metrics. The consume
side is :mod:`messaging`; the operators' tooling (replay, purge, dead letters) is
:mod:`ops`. Imports :mod:`messaging`, :mod:`schema` and :mod:`runtime`, never a service.
"""
