"""Releases, worker instances and Celery settings: pure parts, exact outputs."""
import zipfile
import io
from dataclasses import replace
from pathlib import Path

from deploy import build
from deploy.celery_env import broker_urls, celery_env, env_file, result_backend_url
from deploy.inventory import load_inventory
from deploy.stages import release, workers

INV = load_inventory(Path(__file__).resolve().parents[2] / "inventory.yaml")


def test_target_from_the_host_and_its_platform_tags():
    t = build.parse_target("3.11.2 x86_64 glibc2.36\n")
    assert t == build.Target("3.11.2", "x86_64", "2.36") and t.abi == "cp311"
    tags = t.platforms()
    assert tags[0] == "manylinux_2_36_x86_64" and "manylinux_2_17_x86_64" in tags
    assert "manylinux2014_x86_64" in tags
    assert build.parse_target("", 127) is None


def test_release_id_depends_on_target_and_is_stable():
    a = build.Target("3.11.2", "x86_64", "2.36")
    assert build.release_id(a) == build.release_id(a)
    assert build.release_id(a) != build.release_id(build.Target("3.11.7", "x86_64", "2.36"))


def test_wheel_is_byte_identical_for_the_same_sources_and_importable():
    name, data = build.build_wheel()
    assert name == "celery_kit_app-1.0.0-py3-none-any.whl"
    assert build.build_wheel()[1] == data
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "app/tasks.py" in names and "app/celery.py" in names
    assert any(n.endswith(".dist-info/RECORD") for n in names)


def test_parse_releases_and_prune():
    facts = release.parse_releases("/opt/celery-kit/releases/bbb\nccc\nbbb\naaa\n")
    assert facts == {"current": "bbb", "complete": ["ccc", "bbb", "aaa"]}
    assert release.parse_releases("\n") == {"current": None, "complete": []}
    assert release.prune_plan(["e", "d", "c", "b", "a"], 2, {"e", "c"})[0].commands[0].argv == (
        "rm", "-rf", "/opt/celery-kit/releases/b", "/opt/celery-kit/releases/a")
    assert release.prune_plan(["b", "a"], 2, set()) == []


def test_parse_instances():
    out = ("enabled celery-worker@1.service\nenabled celery-worker@2.service\n"
           "active celery-worker@1.service\nactive celery-worker@2.service\ninactive celery-worker@3.service\n")
    assert workers.parse_instances(out) == {1: {"enabled": True, "active": True},
                                            2: {"enabled": True, "active": True},
                                            3: {"enabled": False, "active": False}}


def test_instance_plan_grow_shrink_restart():
    two = {1: {"enabled": True, "active": True}, 2: {"enabled": True, "active": True}}
    assert workers.instance_plan(two, 2, restart=False) == []
    grow = workers.instance_plan(two, 4, restart=False)
    assert [c.commands[0].argv for c in grow] == [
        ("systemctl", "enable", "celery-worker@3.service", "celery-worker@4.service"),
        ("systemctl", "start", "celery-worker@3.service", "celery-worker@4.service")]
    four = {i: {"enabled": True, "active": True} for i in range(1, 5)}
    (shrink,) = workers.instance_plan(four, 2, restart=False)
    assert shrink.commands[0].argv == ("systemctl", "disable", "--now", "celery-worker@4.service",
                                       "celery-worker@3.service")
    (again,) = workers.instance_plan(two, 2, restart=True)
    assert again.what == "restart celery-worker@1.service, celery-worker@2.service"


def test_parse_ping_json():
    out = 'noise\n{"w1@node2": {"ok": "pong"}, "w2@node2": {"ok": "pong"}}\n'
    assert workers.parse_ping(out) == ["w1@node2", "w2@node2"]
    assert workers.parse_ping("Error: No nodes replied within time constraint\n") == []


def test_switch_is_an_atomic_rename():
    c = workers.switch_cmd("abc")
    assert "ln -sfn" in c.argv[2] and "mv -T" in c.argv[2] and c.argv[-1] == "/opt/celery-kit/releases/abc"


def test_broker_urls_list_every_node_and_backend_url_from_inventory():
    urls = broker_urls(INV, "p/w")
    assert urls == [f"amqp://celery:p%2Fw@10.77.0.1{i}:5672/%2Fcelery" for i in (1, 2, 3)]
    assert result_backend_url(INV, "x") == "redis://:x@10.77.0.11:6379/0"
    env = celery_env(INV, "a", "b")
    assert env["CELERY_BROKER_URL"].count(";") == 2 and env["CELERY_SERIALIZER"] == "msgpack"
    assert env["CELERY_QUEUE_TYPE"] == "classic"
    q = replace(INV, rabbitmq=replace(INV.rabbitmq, queue_mode="quorum"))
    assert celery_env(q, "a", "b")["CELERY_QUEUE_TYPE"] == "quorum"
    assert env_file({"A": "1"}).splitlines()[1:] == ["A='1'"]


def test_app_config_from_env():
    from app.config import from_env
    conf = from_env({"CELERY_QUEUE_TYPE": "quorum", "CELERY_PREFETCH_MULTIPLIER": "4"})
    assert conf["task_default_queue_type"] == "quorum" and conf["worker_prefetch_multiplier"] == 4
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["broker_transport_options"] == {"confirm_publish": True}
    assert conf["accept_content"] == ["msgpack", "json"] and conf["task_serializer"] == "msgpack"


def test_unit_template_warm_shutdown_and_hardening():
    from deploy.files import render
    unit = render("celery-worker@.service.j2", app="app", host=INV.host("node2"), env_file="/e",
                  worker_env_file="/w", release_dir="/opt/celery-kit", stop_timeout=1860).splitlines()
    assert "KillMode=mixed" in unit and "TimeoutStopSec=1860" in unit and "User=celery" in unit
    assert "NoNewPrivileges=yes" in unit and "ProtectSystem=strict" in unit and "PrivateTmp=yes" in unit
    assert any("--hostname=w%i@node2" in line for line in unit)
