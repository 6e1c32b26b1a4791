import os
import sqlite3
import stat

import pytest

from hypersdk.errors import Conflict
from hypersdk.jobs.model import CANCELLED, COMPLETED, FAILED, PENDING, RUNNING, NewJob, Progress
from hypersdk.store.engine import migrations
from hypersdk.store.jobs import this_node
from tests.stores import make_store, sqlite_store
from tests.fakes.runner import ImmediateRunner
from tests.helpers import result_of

pytestmark = pytest.mark.usefixtures("store_engine")  # every test on SQLite and on PostgreSQL

PASSWORD = "s3cret-Pa55"


def new_job(job_id, created_at, password=PASSWORD):
    definition = {"id": job_id, "vm_path": f"DC0/vm/{job_id}", "source": {"password": "***"}}
    return NewJob(id=job_id, definition=definition, secrets={"source.password": password}, created_at=created_at)


@pytest.fixture
def store():
    s = make_store()
    result_of(s.open())
    yield s
    result_of(s.close())


def test_insert_then_get_returns_a_pending_job_with_queued_progress(store):
    result_of(store.insert([new_job("a", 100.0)]))
    job = result_of(store.get("a"))
    assert job.status == PENDING
    assert job.progress == Progress(stage="queued")
    assert job.created_at == job.updated_at == 100.0
    assert job.error is None and job.result is None
    assert result_of(store.get("missing")) is None


def test_duplicate_id_is_a_conflict_and_stores_nothing_of_the_batch(store):
    result_of(store.insert([new_job("a", 1.0)]))
    with pytest.raises(Conflict, match="a job with id a already exists"):
        result_of(store.insert([new_job("b", 2.0), new_job("a", 2.0)]))
    assert result_of(store.get("b")) is None


def test_query_is_newest_first_with_total_before_limit(store):
    result_of(store.insert([new_job(f"j{i}", float(i)) for i in range(10)]))
    jobs, total = result_of(store.query(None, None, limit=3, offset=2))
    assert total == 10
    assert [j.id for j in jobs] == ["j7", "j6", "j5"]
    jobs, total = result_of(store.query([PENDING], ["j1", "j2", "nope"], limit=100, offset=0))
    assert [j.id for j in jobs] == ["j2", "j1"] and total == 2
    assert result_of(store.query([FAILED], None, limit=100, offset=0)) == ([], 0)


def test_same_created_at_orders_by_id_descending(store):
    result_of(store.insert([new_job(i, 5.0) for i in ("b", "c", "a")]))
    jobs, _ = result_of(store.query(None, None, 10, 0))
    assert [j.id for j in jobs] == ["c", "b", "a"]


def test_claim_takes_pending_jobs_in_submission_order(store):
    result_of(store.insert([new_job("first", 9.0), new_job("second", 1.0)]))
    claimed = result_of(store.claim_next(20.0))
    assert (claimed.id, claimed.status, claimed.started_at) == ("first", RUNNING, 20.0)
    assert result_of(store.claim_next(21.0)).id == "second"
    assert result_of(store.claim_next(22.0)) is None


def test_terminal_states_are_final(store):
    result_of(store.insert([new_job("a", 1.0)]))
    result_of(store.claim_next(2.0))
    done = result_of(store.finish("a", CANCELLED, 3.0, from_statuses=(RUNNING,)))
    assert done.status == CANCELLED and done.completed_at == 3.0
    assert result_of(store.finish("a", COMPLETED, 4.0, from_statuses=(RUNNING,), result={"x": 1})) is None
    assert result_of(store.save_progress("a", Progress(stage="conversion"), 5.0)) is False
    job = result_of(store.get("a"))
    assert job.status == CANCELLED and job.result is None and job.progress.stage == "queued"


def test_progress_and_history_are_recorded(store):
    result_of(store.insert([new_job("a", 1.0)]))
    result_of(store.claim_next(2.0))
    assert result_of(store.save_progress("a", Progress(stage="conversion", percent_complete=40.0), 3.0, "conversion started"))
    result_of(store.finish("a", FAILED, 4.0, from_statuses=(RUNNING,), error="conversion: qemu-img exited 1: boom"))
    job = result_of(store.get("a"))
    assert job.progress.percent_complete == 40.0 and job.error == "conversion: qemu-img exited 1: boom"
    history = [(h.status, h.stage, h.message) for h in result_of(store.history("a"))]
    assert history == [
        (PENDING, "queued", "submitted"),
        (RUNNING, "queued", "started"),
        (RUNNING, "conversion", "conversion started"),
        (FAILED, "conversion", "conversion: qemu-img exited 1: boom"),
    ]


def test_restart_fails_running_jobs_naming_their_stage_and_keeps_pending(store):
    result_of(store.insert([new_job("run", 1.0), new_job("wait", 2.0)]))
    result_of(store.claim_next(3.0))
    result_of(store.save_progress("run", Progress(stage="conversion"), 4.0))
    restarted = store.for_node(this_node(store.node.name))
    requeued, failed = result_of(restarted.fail_interrupted(5.0, ("conversion",)))  # no checkpoints: cannot resume
    assert requeued == []
    assert [(j.id, j.status, j.error) for j in failed] == [("run", FAILED, "interrupted: daemon restarted during conversion")]
    assert result_of(store.get("wait")).status == PENDING
    assert result_of(store.counts()) == {PENDING: 1, RUNNING: 0, COMPLETED: 0, FAILED: 1, CANCELLED: 0}


def test_a_job_interrupted_in_a_resumable_stage_with_checkpoints_goes_back_to_the_queue(store):
    from hypersdk.store.checkpoints import ChunkRecord

    result_of(store.insert([new_job("copying", 1.0), new_job("importing", 2.0)]))
    for job_id, stage in (("copying", "conversion"), ("importing", "import")):
        result_of(store.claim_next(3.0))
        result_of(store.save_progress(job_id, Progress(stage=stage), 4.0))
        result_of(store.save_transfer(job_id, 0, {"size": 100}))
        result_of(store.save_chunks(job_id, 0, [ChunkRecord(0, "h0", False), ChunkRecord(1, "h1", True)]))
    restarted = store.for_node(this_node(store.node.name))
    requeued, failed = result_of(restarted.fail_interrupted(5.0, ("conversion", "verification")))
    assert [j.id for j in requeued] == ["copying"] and [j.id for j in failed] == ["importing"]
    assert result_of(store.get("copying")).status == PENDING
    info, chunks = result_of(store.transfers("copying"))[0]
    assert info == {"size": 100} and chunks == {0: ChunkRecord(0, "h0", False), 1: ChunkRecord(1, "h1", True)}
    assert result_of(store.history("copying"))[-1].message == "interrupted by a restart during conversion: resuming"
    assert result_of(restarted.claim_next(6.0)).id == "copying"
    result_of(restarted.save_transfer("copying", 0, {"size": 200}))  # a new start drops the old chunks
    assert result_of(store.transfers("copying"))[0] == ({"size": 200}, {})
    result_of(store.clear_transfers("copying"))
    assert result_of(store.transfers("copying")) == {}


def test_a_pass_s_change_id_is_stored_with_the_checkpoint_and_its_chunks_stay(store):
    from hypersdk.store.checkpoints import ChunkRecord

    result_of(store.insert([new_job("warm", 1.0)]))
    result_of(store.claim_next(2.0))
    result_of(store.save_transfer("warm", 0, {"identity": {"size": 100, "change_id": None}, "chunk_size": 8}))
    result_of(store.save_chunks("warm", 0, [ChunkRecord(0, "h0", False)]))
    result_of(store.save_change_id("warm", 0, "52 aa/3"))
    info, chunks = result_of(store.transfers("warm"))[0]
    assert info == {"identity": {"size": 100, "change_id": "52 aa/3"}, "chunk_size": 8}
    assert chunks == {0: ChunkRecord(0, "h0", False)}


def test_secrets_are_encrypted_at_rest_with_a_private_key_file(tmp_path):
    db = str(tmp_path / "var" / "jobs.db")
    key = db + ".key"
    store = sqlite_store(db, ImmediateRunner(), key_path=key)
    result_of(store.open())
    result_of(store.insert([new_job("a", 1.0)]))
    assert result_of(store.secrets("a")) == {"source.password": PASSWORD}
    result_of(store.close())
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    for name in os.listdir(tmp_path / "var"):
        assert PASSWORD.encode() not in (tmp_path / "var" / name).read_bytes(), name
    # The same key file opens the secrets again after a restart.
    again = sqlite_store(db, ImmediateRunner(), key_path=key)
    result_of(again.open())
    assert result_of(again.secrets("a")) == {"source.password": PASSWORD}
    result_of(again.close())


def test_schema_is_versioned_and_opening_twice_migrates_once(tmp_path):
    db = str(tmp_path / "jobs.db")
    for _ in range(2):
        store = sqlite_store(db, ImmediateRunner(), key_path=db + ".key")
        result_of(store.open())
        result_of(store.close())
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == migrations("sqlite")[-1][0]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


SQLITE_ONLY = pytest.mark.parametrize("store_engine", ["sqlite"], indirect=True)  # no PostgreSQL case generated


@SQLITE_ONLY  # SQLite's query planner
def test_status_queries_use_an_index(store):
    plan = store._engine.db.conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE status IN (?) ORDER BY created_at DESC, id DESC LIMIT 10",
        (FAILED,),
    ).fetchall()
    assert "jobs_by_status_created" in " ".join(str(tuple(r)) for r in plan)


@SQLITE_ONLY  # SQLite's query planner
def test_claim_uses_the_pending_index_even_without_statistics(store):
    from hypersdk.store.jobs import _CLAIM

    plan = store._engine.db.conn.execute(f"EXPLAIN QUERY PLAN {_CLAIM['sqlite'].format(skip='')}").fetchall()
    text = " ".join(str(tuple(r)) for r in plan)
    assert "jobs_pending_fifo" in text and "TEMP B-TREE" not in text


def test_cancel_pending_in_one_go_leaves_other_jobs_alone(store):
    result_of(store.insert([new_job(f"j{i}", float(i)) for i in range(5)]))
    result_of(store.claim_next(10.0))  # j0 runs
    named = result_of(store.cancel_pending(["j0", "j1", "ghost"], 11.0))
    assert [j.id for j in named] == ["j1"]
    rest = result_of(store.cancel_pending(None, 12.0))
    assert sorted(j.id for j in rest) == ["j2", "j3", "j4"]
    assert result_of(store.get("j0")).status == RUNNING
    assert result_of(store.counts())[CANCELLED] == 4
    assert [h.message for h in result_of(store.history("j3"))] == ["submitted", "cancelled"]


def test_a_key_file_in_a_directory_not_made_yet_is_created_with_its_private_directory(tmp_path):
    from hypersdk.store.secretbox import thd_load_or_create_key

    path = tmp_path / "etc" / "hypersdk" / "secrets.key"
    key = thd_load_or_create_key(str(path))
    assert path.read_bytes().strip() == key and thd_load_or_create_key(str(path)) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_progress_written_earlier_never_replaces_progress_written_later_whatever_order_they_land_in(store):
    from hypersdk.jobs.model import Progress

    result_of(store.insert([new_job("j", 1.0)]))
    result_of(store.claim_next(2.0))
    assert result_of(store.save_progress("j", Progress(stage="inspection"), 20.0, "reading the guest")) is True
    assert result_of(store.save_progress("j", Progress(stage="verification"), 10.0, "verifying")) is True  # late
    job = result_of(store.get("j"))
    assert (job.progress.stage, job.updated_at) == ("inspection", 20.0)
    assert [h.message for h in result_of(store.history("j"))][-2:] == ["verifying", "reading the guest"]  # each kept, by time
