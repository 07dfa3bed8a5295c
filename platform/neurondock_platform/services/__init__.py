"""Domain verbs: plain functions taking a SQLAlchemy session, raising typed errors."""
