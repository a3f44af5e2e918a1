"""ORM models and migrations of the scheduling tables."""
