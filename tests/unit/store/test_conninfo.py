"""What every PostgreSQL connection asks of libpq and of the server: a dead network noticed in
seconds, statements and idle transactions bounded, no password unless given."""

from psycopg.conninfo import conninfo_to_dict

from hypersdk.store.postgres import conninfo


def test_connections_notice_a_dead_network_in_seconds_and_bound_what_the_server_waits_for():
    params = conninfo_to_dict(conninfo("postgresql://hypersdk@db.example.com:5432/hypersdk", None))
    assert (params["keepalives"], params["keepalives_idle"], params["keepalives_interval"],
            params["keepalives_count"]) == ("1", "5", "2", "3")  # a silent peer is dropped after ~11 s
    assert params["tcp_user_timeout"] == "10000"  # data unacknowledged for 10 s ends the connection
    assert "statement_timeout=30000" in params["options"]
    assert "idle_in_transaction_session_timeout=10000" in params["options"]
    assert "password" not in params
    assert conninfo_to_dict(conninfo("postgresql://h@db/x", "s3cret"))["password"] == "s3cret"
