"""The reliable-messaging core: append events in the caller's transaction, relay them.

Also home (in later modules) to the idempotent consume loop, replay and the ops CLI.
Imports :mod:`schema` and :mod:`runtime`, never a service package.
"""
