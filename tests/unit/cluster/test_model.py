from hypersdk.cluster.model import LOST, UP, Node, NodeId, lease_expired, name_in_use, takeover

ME = NodeId(name="conv-1", instance="new", host="hostA", pid=200)


def holder(state=UP, heartbeat=100.0, host="hostA", pid=100, instance="old"):
    return Node(name="conv-1", instance=instance, host=host, pid=pid, state=state, started_at=0.0,
                last_heartbeat=heartbeat)


def alive(pid):
    return True


def dead(pid):
    return False


def test_a_lease_expires_once_the_heartbeat_is_older_than_it():
    assert not lease_expired(100.0, 130.0, 30.0)
    assert lease_expired(100.0, 130.5, 30.0)


def test_a_live_daemon_elsewhere_keeps_its_name_and_the_refusal_says_what_to_do():
    problem = name_in_use(holder(host="hostB"), ME, 110.0, 30.0, alive)
    assert "node_name 'conv-1' is in use by a live daemon on hostB (pid 100, last heartbeat 10 s ago)" in problem
    assert "another node_name" in problem and "30 s" in problem


def test_a_name_is_free_when_unheld_stopped_lost_expired_or_its_holder_here_is_dead():
    assert name_in_use(None, ME, 110.0, 30.0, alive) is None
    assert name_in_use(holder(state="stopped"), ME, 110.0, 30.0, alive) is None
    assert name_in_use(holder(state=LOST), ME, 110.0, 30.0, alive) is None
    assert name_in_use(holder(host="hostB"), ME, 131.0, 30.0, alive) is None
    assert name_in_use(holder(), ME, 110.0, 30.0, dead) is None  # killed and restarted on this host
    assert name_in_use(holder(), ME, 110.0, 30.0, alive) is not None  # a second daemon here, still running
    assert name_in_use(holder(host="hostB"), ME, 110.0, 30.0, dead) is not None  # a pid elsewhere says nothing


def test_a_copy_with_checkpoints_it_can_reach_resumes_and_anything_else_fails_naming_the_lost_node():
    resumed = takeover("conv-2", "up", 41.7, "conversion", ("conversion",), ["/srv/a.qcow2"], [])
    assert resumed.requeue
    assert resumed.message == ("node conv-2 was lost (no heartbeat for 42 s) during conversion:"
                               " resuming from its checkpoints on another node")
    unreachable = takeover("conv-2", "up", 40, "conversion", ("conversion",), ["/srv/a.qcow2"], ["/srv/a.qcow2"])
    assert not unreachable.requeue and "/srv/a.qcow2" in unreachable.message and "conv-2" in unreachable.message
    no_checkpoint = takeover("conv-2", "up", 40, "conversion", ("conversion",), [], [])
    assert not no_checkpoint.requeue
    importing = takeover("conv-2", "up", 40, "import", ("conversion",), ["/srv/a.qcow2"], [])
    assert not importing.requeue and importing.message == "node conv-2 was lost (no heartbeat for 40 s) during import"
    stopped = takeover("conv-2", "stopped", 40, "conversion", ("conversion",), ["/srv/a.qcow2"], [])
    assert stopped.requeue and stopped.message.startswith("node conv-2 stopped (no heartbeat for 40 s) during conversion")
