"""The command side: accept an application and store it with its outbox event atomically.

HTTP → validated command → one transaction (application, outbox row, projection row,
idempotency key). Never imports Kafka: only the relay talks to the broker.
"""
