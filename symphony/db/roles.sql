-- Named queries of symphony.db.roles: login roles for the daemons' group roles
-- (migration 0042). Role names and passwords cannot be bind parameters of DDL,
-- so each block returns the statement, quoted by format(%I/%L), to execute.

-- name: role_facts
-- Whether role $1 exists, and what the connected role may do about it.
SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1) AS role_exists,
       r.rolsuper AS superuser,
       r.rolcreaterole AS may_create_roles
FROM pg_roles r
WHERE r.rolname = current_user;

-- name: create_login_role
-- CREATE ROLE $1 (login) with password verifier $2, member of group $3.
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS '
              'INHERIT PASSWORD %L IN ROLE %I', $1::text, $2::text, $3::text);

-- name: alter_login_role
-- Resets login role $1 to a plain login with password verifier $2.
SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS '
              'INHERIT PASSWORD %L', $1::text, $2::text);

-- name: grant_group
-- GRANT group $2 TO login role $1 (a no-op notice when it is a member already).
SELECT format('GRANT %I TO %I', $2::text, $1::text);

-- name: whoami
-- What a daemon's connection is: its role, superuser or not, and whether it
-- owns any table of the current schema.
SELECT current_user::text AS role_name,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
       EXISTS (SELECT FROM pg_tables WHERE schemaname = current_schema() AND tableowner = current_user)
           AS owns_tables;
