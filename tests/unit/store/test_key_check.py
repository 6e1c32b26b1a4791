"""One key for every node sharing a database (both engines): the database keeps the key's fingerprint
from the first start, and a daemon with another key file, or none where the database has one, is
refused with a message naming its key file and what to do, touching nothing."""

import os

import pytest
from cryptography.fernet import Fernet

from hypersdk.config import ConfigError
from hypersdk.store.engine import SQLiteEngine
from hypersdk.store.jobs import JobStore
from hypersdk.store.postgres import PostgresEngine
from hypersdk.store.secretbox import SecretBox
from tests import stores
from tests.fakes.runner import ImmediateRunner
from tests.helpers import result_of
from tests.unit.store.test_job_store import PASSWORD, new_job

pytestmark = pytest.mark.usefixtures("store_engine")


@pytest.fixture
def database(tmp_path):
    """Opens a store on this test's database (one SQLite file, or one PostgreSQL database) with a key file."""
    url = stores.current["url"]

    def open_with(key_path: str) -> JobStore:
        engine = (PostgresEngine(url, ImmediateRunner()) if url else
                  SQLiteEngine(str(tmp_path / "jobs.db"), ImmediateRunner()))
        store = JobStore(engine, str(key_path))
        result_of(store.open())
        return store

    return open_with


def test_a_node_with_the_same_key_file_opens_and_its_secrets_open(database, tmp_path):
    first = database(tmp_path / "a.key")
    result_of(first.insert([new_job("j", 1.0)]))
    result_of(first.close())
    again = database(tmp_path / "a.key")
    assert result_of(again.secrets("j")) == {"source.password": PASSWORD}
    fingerprint = result_of(again.run_with_db(lambda db, box: db.one("SELECT value FROM settings")["value"]))
    key = (tmp_path / "a.key").read_bytes().strip()
    assert fingerprint == SecretBox(key).fingerprint and key.decode() not in fingerprint
    result_of(again.close())


def test_another_key_file_is_refused_naming_it_and_what_to_do(database, tmp_path):
    result_of(database(tmp_path / "a.key").close())
    other = tmp_path / "other.key"
    other.write_bytes(Fernet.generate_key() + b"\n")
    before = other.read_bytes()
    with pytest.raises(ConfigError) as refused:
        database(other)
    assert str(other) in str(refused.value) and "give this daemon the key file" in str(refused.value)
    assert other.read_bytes() == before


def test_a_missing_key_file_is_refused_where_the_database_has_a_key_and_none_is_made(database, tmp_path):
    result_of(database(tmp_path / "a.key").close())
    missing = tmp_path / "elsewhere" / "b.key"
    with pytest.raises(ConfigError, match="does not exist"):
        database(missing)
    assert not os.path.exists(missing)


def test_a_database_from_before_fingerprints_refuses_a_key_that_cannot_open_its_secrets(database, tmp_path):
    first = database(tmp_path / "a.key")
    result_of(first.insert([new_job("j", 1.0)]))
    result_of(first.run_with_db(lambda db, box: db.execute("DELETE FROM settings")))  # as an older version left it
    result_of(first.close())
    with pytest.raises(ConfigError, match="cannot open the secrets stored in the database"):
        database(tmp_path / "new.key")
    again = database(tmp_path / "a.key")  # the right key is taken, and its fingerprint kept from now on
    assert result_of(again.secrets("j")) == {"source.password": PASSWORD}
    result_of(again.close())
