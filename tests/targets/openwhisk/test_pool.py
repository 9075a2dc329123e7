"""The local controller's container pool with real containers of the tiny action image:
dead containers are never handed out, containers per action are bounded and activations
queue for them, and a container dying mid-activation fails that activation only."""
from __future__ import annotations

import threading
import time
import uuid

import pytest

pytestmark = pytest.mark.docker


@pytest.fixture
def make_controller(action_image):
    """make_controller(**pool_options) -> a Controller (in memory) over a fresh Pool."""
    from mlfn.targets.local.controller import Controller
    from mlfn.targets.local.pool import Pool
    from mlfn.targets.local.store import Store

    pools = []

    def make(**pool_options):
        pool = Pool(owner=f"test-pool-{uuid.uuid4().hex[:10]}", **pool_options)
        pools.append(pool)
        return Controller(Store(None), pool)

    yield make
    for pool in pools:
        pool.shutdown()


def add_action(controller, image: str, name: str = "fn", **limits) -> dict:
    return controller.put_action(name, {"exec": {"kind": "blackbox", "image": image}, "limits": limits},
                                 overwrite=False)


def activate_all(controller, action: dict, values: list) -> list:
    """Activation records of `values`, run concurrently (one thread each)."""
    records = [None] * len(values)

    def one(i):
        records[i] = controller.activate(action["name"], action, values[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(values))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return records


def labelled(pool, all_: bool = False) -> list:
    import docker

    from mlfn.targets.local.pool import OWNER_LABEL

    labels = {"label": f"{OWNER_LABEL}={pool.owner}"}
    return docker.from_env().containers.list(all=all_, sparse=True, filters=labels)


def wait_until(predicate, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def annotation(record: dict, key: str):
    return next((kv["value"] for kv in record["annotations"] if kv["key"] == key), None)


def test_killed_warm_containers_are_replaced_by_cold_starts(make_controller, action_image):
    controller = make_controller(max_starting=3)
    pool = controller.pool
    action = add_action(controller, action_image)
    warmed = activate_all(controller, action, [{"sleep": 1.0}] * 3)  # long enough to start more than one
    assert [r["response"]["statusCode"] for r in warmed] == [0, 0, 0]
    killed = {c.docker_id for c in pool.ready("fn")}
    assert killed  # usually 2 or 3: the queue waited longer than a cold start
    for c in labelled(pool):
        c.kill()
    assert wait_until(lambda: not pool.ready("fn"), 3.0), "Docker's die events did not drop the dead containers"

    t0 = time.monotonic()
    records = [controller.activate("fn", action, {"i": i}) for i in range(5)]
    elapsed = time.monotonic() - t0

    assert [r["response"]["statusCode"] for r in records] == [0] * 5, [r["response"] for r in records]
    assert [r["response"]["result"]["value"] for r in records] == [{"i": i} for i in range(5)]
    assert annotation(records[0], "initTime") is not None  # a transparent cold start
    assert elapsed < 30, f"five activations after the kill took {elapsed:.1f} s"  # no connect or read timeouts
    assert not killed & {c.docker_id for c in pool.ready("fn")}
    assert wait_until(lambda: not killed & {c.id for c in labelled(pool, all_=True)}), "dead containers not removed"


class DockerWithoutEvents:
    """The real Docker client, except that its event stream stays silent: the pool does not
    learn of a container's death before it hands the container out (the race with the event)."""

    def __init__(self):
        import docker

        self.client = docker.from_env()

    def events(self, **kwargs):
        return iter(())

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_a_warm_container_dead_before_its_event_arrives_is_retried_transparently(make_controller, action_image):
    controller = make_controller(docker_client=DockerWithoutEvents())
    pool = controller.pool
    action = add_action(controller, action_image)
    assert controller.activate("fn", action, {"i": 0})["response"]["statusCode"] == 0
    [warm] = pool.ready("fn")
    [container] = labelled(pool)
    container.kill()
    assert wait_until(lambda: not labelled(pool))  # it is dead, and the pool still lists it
    assert [c.docker_id for c in pool.ready("fn")] == [warm.docker_id]

    record = controller.activate("fn", action, {"i": 1})

    assert record["response"]["statusCode"] == 0, record["response"]
    assert record["response"]["result"]["value"] == {"i": 1}
    assert annotation(record, "initTime") is not None
    assert warm.docker_id not in {c.docker_id for c in pool.ready("fn")}


def test_concurrent_activations_never_start_more_containers_than_the_bound(make_controller, action_image):
    controller = make_controller(memory_budget_mb=512, max_starting=8)  # 256 MB actions: at most 2
    action = add_action(controller, action_image, memory=256)
    seen = []
    stop = threading.Event()

    def watch():  # how many containers existed, as Docker sees it, every 50 ms
        while not stop.is_set():
            seen.append(len(labelled(controller.pool, all_=True)))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        records = activate_all(controller, action, [{"sleep": 0.4, "i": i} for i in range(8)])
    finally:
        stop.set()
        watcher.join()

    assert [r["response"]["statusCode"] for r in records] == [0] * 8, [r["response"] for r in records]
    assert controller.pool.started <= 2
    assert 1 <= max(seen) <= 2
    assert max(annotation(r, "waitTime") for r in records) >= 300  # the others queued for a free slot


def test_a_queue_wait_beyond_the_bound_ends_in_one_clear_error(make_controller, action_image):
    controller = make_controller(memory_budget_mb=256, queue_wait_s=0.5)
    action = add_action(controller, action_image, memory=256)
    busy = threading.Thread(target=controller.activate, args=("fn", action, {"sleep": 1.5}))
    busy.start()
    assert wait_until(lambda: any(c.inflight for c in controller.pool.ready("fn")))

    t0 = time.monotonic()
    record = controller.activate("fn", action, {"i": 1})
    waited = time.monotonic() - t0
    busy.join(10)

    assert record["response"]["statusCode"] == 3
    assert record["response"]["result"]["error"].startswith("No container of action 'fn' became free within 0.5 s")
    assert 0.4 <= waited < 5.0
    assert controller.pool.started == 1


def test_a_container_killed_mid_activation_fails_that_activation_only(make_controller, action_image):
    import docker

    controller = make_controller()
    pool = controller.pool
    action = add_action(controller, action_image)
    records: dict = {}

    def activate(name, value):
        records[name] = controller.activate("fn", action, value)

    victim_run = threading.Thread(target=activate, args=("victim", {"sleep": 30}))
    victim_run.start()
    assert wait_until(lambda: [c.inflight for c in pool.ready("fn")] == [1], 30)
    [victim] = pool.ready("fn")
    other_run = threading.Thread(target=activate, args=("other", {"sleep": 1.0}))
    other_run.start()  # queues, then starts a second container
    assert wait_until(lambda: sum(c.inflight for c in pool.ready("fn")) == 2, 30)

    kill_ms = time.time() * 1000
    docker.from_env().containers.get(victim.docker_id).kill()
    victim_run.join(20)
    other_run.join(30)

    assert records["victim"]["response"]["statusCode"] == 2
    assert "exited unexpectedly" in records["victim"]["response"]["result"]["error"]
    assert records["victim"]["end"] - kill_ms < 5000  # at once, not after its 30 s sleep
    assert records["other"]["response"]["statusCode"] == 0, records["other"]["response"]
    assert victim.docker_id not in {c.docker_id for c in pool.ready("fn")}
    assert controller.activate("fn", action, {"i": 9})["response"]["statusCode"] == 0


def test_updating_an_action_retires_its_busy_container_when_the_activation_ends(make_controller, action_image):
    controller = make_controller()
    pool = controller.pool
    action = add_action(controller, action_image)
    records: dict = {}
    running = threading.Thread(target=lambda: records.setdefault("old", controller.activate(
        "fn", action, {"sleep": 1.0})))
    running.start()
    assert wait_until(lambda: [c.inflight for c in pool.ready("fn")] == [1], 30)
    [old] = pool.ready("fn")

    updated = controller.put_action("fn", {"exec": {"kind": "blackbox", "image": action_image}}, overwrite=True)
    assert pool.ready("fn") == []  # no new activation gets the old revision's container
    running.join(30)

    assert records["old"]["response"]["statusCode"] == 0  # the running activation finished normally
    assert wait_until(lambda: old.docker_id not in {c.id for c in labelled(pool, all_=True)}, 10)
    new = controller.activate("fn", updated, {"i": 1})
    assert new["response"]["statusCode"] == 0 and new["version"] == updated["version"]
    assert [c.docker_id for c in pool.ready("fn")] != [old.docker_id]
