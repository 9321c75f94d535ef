"""Every durable contract of prequal.

SQLAlchemy table definitions, Alembic migrations, and the versioned pydantic event
payloads with their generated JSON Schemas. Imports only :mod:`runtime`.
"""
