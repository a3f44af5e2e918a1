-- The three databases of team mode, owned by the role `mlops`. One database per store:
-- MLflow and Optuna both keep their schema revision in a table named `alembic_version`,
-- so they cannot share one; `mlops` holds the registry's ledger and the schedules.
--
-- Compose runs this file once, on an empty data volume (docker-entrypoint-initdb.d), where
-- the image has already made the role `mlops` and the database `mlops`. On a distribution's
-- PostgreSQL, make the role first, then run it as the superuser (psql, for \gexec):
--   sudo -u postgres createuser --pwprompt mlops
--   sudo -u postgres psql -v ON_ERROR_STOP=1 -f platform/deploy/postgres-init.sql
-- Idempotent: a database that exists is left alone. The schemas themselves are made by
-- `mlops db upgrade`.

SELECT 'CREATE DATABASE mlflow OWNER mlops'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow')\gexec

SELECT 'CREATE DATABASE optuna OWNER mlops'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'optuna')\gexec

SELECT 'CREATE DATABASE mlops OWNER mlops'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlops')\gexec
