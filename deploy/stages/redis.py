"""Redis as the Celery result backend: bound to its inventory address and localhost,
password required, dangerous commands disabled, AOF persistence, Debian's unit."""
from __future__ import annotations

from .. import facts as F
from ..files import from_template, managed
from ..ops import file_changes, service_changes
from ..stage import Stage, StageEnv
from ..steps import Plan

CONF = "/etc/redis/redis.conf"
AUTH = "/etc/redis/celery-kit-auth.conf"
UNIT = "redis-server.service"
DANGEROUS = ("FLUSHALL", "FLUSHDB", "CONFIG", "DEBUG", "MODULE", "SHUTDOWN")


def wanted_files(ctx, host) -> list:
    password = ctx.secret("redis_password").reveal()
    return [
        from_template(CONF, "redis.conf.j2", {"host": host, "redis": ctx.inv.redis,
                                              "dangerous_commands": DANGEROUS, "auth_file": AUTH},
                      owner="redis", group="redis", mode=0o640),
        managed(AUTH, f'requirepass "{password}"\n', owner="redis", group="redis", mode=0o640,
                secret=True),
    ]


class Redis(Stage):
    name = "redis"

    def hosts(self, inv) -> list:
        return list(inv.with_role("redis"))

    def facts(self, ctx, host) -> list:
        return [F.files([f.path for f in wanted_files(ctx, host)]), F.units([UNIT])]

    def plan(self, ctx, host, facts: dict, env: StageEnv) -> Plan:
        steps = file_changes(wanted_files(ctx, host), facts["files"])
        steps += service_changes(UNIT, facts["units"].get(UNIT), restart=bool(steps))
        return Plan(steps)
