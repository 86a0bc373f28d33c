"""PostgreSQL storage: the repository (source of truth) and the schema migrations."""
