-- Run once by the postgres image (as its superuser, postgres) on a fresh data directory;
-- docker-compose.yml mounts it into /docker-entrypoint-initdb.d. It makes what labenv makes:
-- role lab, which is NOT a superuser (a lab shows per-role connection limits, and superusers
-- bypass them), database lab owned by lab, pg_stat_statements in lab, and the right to read
-- every role's statistics. And role lab_api, a login with no privileges of its own, granted to
-- lab (which may then grant it table rights and end its backends): the least-privilege role
-- lab-sql-injection's API runs as.
CREATE ROLE lab LOGIN PASSWORD 'lab' NOSUPERUSER NOCREATEDB NOCREATEROLE;
CREATE DATABASE lab OWNER lab;
GRANT pg_read_all_stats TO lab;
CREATE ROLE lab_api LOGIN PASSWORD 'lab_api' NOSUPERUSER NOCREATEDB NOCREATEROLE;
GRANT lab_api TO lab;
\connect lab
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
