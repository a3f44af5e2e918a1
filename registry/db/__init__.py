"""The registry's own tables in the platform database: ORM models, migrations, store."""
