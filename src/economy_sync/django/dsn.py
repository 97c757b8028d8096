"""The libpq connection string of a Django database connection."""

from psycopg.conninfo import make_conninfo

# what Django adds to the connection parameters that libpq does not know
NOT_LIBPQ = ("cursor_factory", "context", "prepare_threshold", "server_side_binding", "pool")


def connection_dsn(connection) -> str:
    params = connection.get_connection_params()
    return make_conninfo(**{k: v for k, v in params.items() if k not in NOT_LIBPQ})
