-- Undo 0001_core. The roles are shared by every database of the cluster: each
-- is dropped only when no other database still grants it anything.

DROP SCHEMA economy CASCADE;

DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['economy_operator', 'economy_app'] LOOP
        IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format('DROP ROLE %I', role_name);
            EXCEPTION
                WHEN dependent_objects_still_exist THEN
                    RAISE NOTICE 'role % kept: another database still uses it', role_name;
            END;
        END IF;
    END LOOP;
END;
$$;
