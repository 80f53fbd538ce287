#!/bin/bash
# The replication role and its pg_hba line for the postgres-primary service of docker-compose.yml
# (profile "replicas"), as `scripts/labenv up --replicas` makes them: only on that primary.
set -euo pipefail
psql -v ON_ERROR_STOP=1 -U postgres -d postgres \
	-c "CREATE ROLE lab_replicator LOGIN REPLICATION PASSWORD 'lab_replicator' NOSUPERUSER"
echo "host replication lab_replicator all scram-sha-256" >>"$PGDATA/pg_hba.conf"
# Last: from the next start on, commits at synchronous_commit on/remote_* wait for lab_replica.
psql -v ON_ERROR_STOP=1 -U postgres -d postgres -c "ALTER SYSTEM SET synchronous_standby_names = 'lab_replica'"
