"""Running the loop: the database schema (alembic-migrated), the decision log and review queue, the review
rules, retuning from audited outcomes, and a simulated run against a live service."""
