"""Real services for end-to-end tests, one module per thing served.

- `processes`: starting, watching and stopping a service's process group; `wait_for`.
- `dagster_services`: dagster-webserver and dagster-daemon on workspace.yaml.
- `graphql`: the webserver's GraphQL endpoint as the UI calls it (backfills, checks, runs,
  sensors).
- `postgres`: a PostgreSQL server of our own for a Postgres-backed Dagster instance.
- `user_path`: what a user does end to end (plant, catalog, backfill, checks, shutdown) and
  the assertions on it.
"""
