-- Query counting for the verifier (TechEmpower counts statements with it).
-- Separate from hello_world.sql because some Postgres builds (the pgserver wheel used
-- natively when no Postgres is installed) do not ship the extension.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
