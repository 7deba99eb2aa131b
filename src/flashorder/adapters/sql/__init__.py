"""The relational store (MariaDB, or SQLite in embedded mode): schema, migrations, the unit of work,
its repositories, the outbox, the read model and the projector status."""
