import pytest

from tests import stores


@pytest.fixture(scope="session")
def postgres_server():
    from tests.postgres import PostgresServer

    server = PostgresServer.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_engine(request):
    """Runs a test once per engine: the stores the test makes (stores.make_store) use it."""
    stores.current["engine"] = request.param
    if request.param == "postgresql":
        stores.current["url"] = request.getfixturevalue("postgres_server").new_database()
    yield request.param
    stores.current.update(engine="sqlite", url=None)


@pytest.fixture
def db(store_engine):
    """An open job store on the engine of the test (``stores.make_store``)."""
    from tests.helpers import result_of

    store = stores.make_store()
    result_of(store.open())
    yield store
    result_of(store.close())
