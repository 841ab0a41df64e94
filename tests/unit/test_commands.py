"""Command builders: exact command lines, quoting, and secrets kept off argv and output."""
from deploy import commands as C
from deploy.lock import acquire_cmd


def test_sudo_and_quoting():
    c = C.cmd("install", "-d", "/var/lib/my dir")
    assert c.shell() == "sudo -n -H install -d '/var/lib/my dir'"
    assert C.cmd("id", sudo=False).shell() == "id"


def test_env_goes_before_the_command_under_sudo():
    c = C.cmd("apt-get", "update", env={"DEBIAN_FRONTEND": "noninteractive"})
    assert c.shell() == "sudo -n -H env DEBIAN_FRONTEND=noninteractive apt-get update"


def test_apt_install_blocks_service_start_and_always_restores_policy_rc_d():
    (c,) = C.apt_install(["redis-server", "rabbitmq-server"])
    assert c.argv[:2] == ("sh", "-c")
    script = c.argv[2]
    assert "exit 101" in script and script.index("policy-rc.d") < script.index("apt-get install")
    # An admin's own policy-rc.d is set aside and put back, even if the connection drops.
    assert "mv $P $P.ck-saved" in script and "trap 'rm -f $P; [ -e $P.ck-saved ] && mv $P.ck-saved $P' EXIT" in script
    assert c.argv[3:] == ("apt-install", "rabbitmq-server", "redis-server")   # sorted, as args


def test_install_file_is_atomic_with_owner_and_mode():
    c = C.install_file("/home/deploy/.celery-kit-staging/ab", "/etc/redis/redis.conf", "redis", "redis", 0o640)
    assert c.argv[3:] == ("install-file", "redis", "redis", "0640", "/home/deploy/.celery-kit-staging/ab",
                          "/etc/redis/redis.conf.ck-new", "/etc/redis/redis.conf")
    assert 'mv -f "$5" "$6"' in c.argv[2]
    assert c.argv[2].startswith("trap 'rm -f \"$4\"' EXIT")       # staged copy never left behind


def test_system_user_and_mkdir():
    assert C.system_user("celery", "/var/lib/celery").argv == (
        "adduser", "--system", "--group", "--home", "/var/lib/celery", "--no-create-home",
        "--disabled-login", "--shell", "/usr/sbin/nologin", "celery")
    assert C.mkdir("/var/lib/celery", "celery", "celery", 0o750).argv == (
        "install", "-d", "-o", "celery", "-g", "celery", "-m", "0750", "/var/lib/celery")


def test_masking_hides_registered_secrets_in_shown_commands():
    C.register_secret("s3cr3t-password-xyz")
    c = C.cmd("echo", "s3cr3t-password-xyz")
    assert "s3cr3t" not in c.show() and "********" in c.show()
    assert C.mask("url amqp://u:s3cr3t-password-xyz@h") == "url amqp://u:********@h"


def test_stdin_is_not_part_of_the_command_line():
    c = C.cmd("rabbitmqctl", "add_user", "celery", stdin="pw-on-stdin-123")
    assert "pw-on-stdin" not in c.shell() and c.stdin == b"pw-on-stdin-123"
    assert c.show().endswith("< (stdin)")


def test_lock_owner_goes_on_stdin_with_its_token():
    from deploy.lock import Owner
    c = acquire_cmd(Owner("t0k3n", "alice@ctl pid 1"))
    assert "alice" not in c.shell() and c.stdin == b"alice@ctl pid 1\ntoken t0k3n\n"
    assert "mkdir /run/celery-kit.lock" in c.argv[2]
