"""Relational storage: the SQLAlchemy engine and session, base models, Alembic migrations."""
