"""`fab rabbitmq.migrate --from-vhost OLD`: move the tasks left in a vhost the cluster no longer
uses into the inventory's vhost, and retire the old one.

A queue's type cannot change in place, so mirrored queues become quorum queues through a new
vhost (README, "From mirrored to quorum queues"): the inventory gets `queue_mode: quorum` and a
new `vhost`, `fab deploy` creates it and rolls the workers onto it, producers switch with
`fab client-env`. What is still in the old vhost -- tasks published before the producers
switched, tasks the old workers had prefetched and gave back when they stopped -- is then
moved here: a shovel per queue (RabbitMQ's shovel plugin, a direct connection inside the node:
no password anywhere), acknowledging each message only once the new vhost confirmed it
(at-least-once: nothing lost, a message may arrive twice). The operation waits until the old
queues are empty and no client is connected to the old vhost any more, then removes the
shovels (and with --delete-old, the vhost).
"""
from __future__ import annotations

import json
from urllib.parse import quote

from . import commands as C
from . import facts as F
from . import rabbitmq_model as M
from .errors import DeployFailed
from .stage import Stage, StageEnv
from .steps import Await, Change, Plan

WAIT = 1800          # seconds the old vhost may take to empty (producers still switching)


def shovel_name(queue: str) -> str:
    return f"celery-kit-migrate-{queue}"


def shovel_definition(old: str, new: str, user: str, queue: str) -> dict:
    """From queue `queue` of `old` to the queue of the same name in `new` (the default
    exchange: the queue itself). amqp://user@/vhost is a direct connection inside the node."""
    return {"src-protocol": "amqp091", "src-uri": f"amqp://{quote(user, safe='')}@/{quote(old, safe='')}",
            "src-queue": queue,
            "dest-protocol": "amqp091", "dest-uri": f"amqp://{quote(user, safe='')}@/{quote(new, safe='')}",
            "dest-queue": queue, "ack-mode": "on-confirm", "src-delete-after": "never"}


def parse_json_list(out: str, rc: int = 0) -> list | None:
    value = F.parse_json(out, rc)
    return value if isinstance(value, list) else None


SPLIT = "@@celery-kit@@"


def old_vhost_fact(vhost: str) -> F.Fact:
    """The old vhost's queues (depth, unacknowledged) and how many clients are connected to it."""
    script = (f'rabbitmqctl -q list_queues -p "$1" name messages messages_unacknowledged --formatter json; '
              f'echo {SPLIT}; rabbitmqctl -q list_connections vhost --formatter json')

    def parse(out: str, rc: int) -> dict | None:
        queues, _, conns = out.partition(SPLIT)
        q, c = parse_json_list(queues), parse_json_list(conns)
        if q is None or c is None:
            return None
        return {"queues": q, "connections": sum(1 for x in c if x.get("vhost") == vhost)}
    return F.Fact("old", ("sh", "-c", script, "old-vhost", vhost), parse)


def drained(old: dict | None, names: list[str]) -> bool:
    if old is None:
        return False
    left = sum(q.get("messages", 0) + q.get("messages_unacknowledged", 0) for q in old["queues"] if q["name"] in names)
    return left == 0 and old["connections"] == 0


class MoveTasks(Stage):
    name = "move tasks from the old vhost"

    def __init__(self, old_vhost: str, delete_old: bool = False):
        self.old, self.delete_old = old_vhost, delete_old

    def hosts(self, inv) -> list:
        return list(inv.with_role("rabbitmq")[:1])

    def facts(self, ctx, host) -> list:
        return [old_vhost_fact(self.old),
                F.Fact("vhosts", ("rabbitmqctl", "-q", "list_vhosts", "--formatter", "json"),
                       lambda out, rc: [v["name"] for v in parse_json_list(out, rc) or []])]

    def plan(self, ctx, host, facts: dict, env: StageEnv) -> Plan:
        inv, new = ctx.inv, ctx.inv.rabbitmq.vhost
        if self.old == new:
            raise DeployFailed(f"{self.old} is the inventory's vhost: first set rabbitmq.vhost to the new one "
                               "(and queue_mode: quorum) and `fab deploy`, then move what is left")
        if self.old not in facts["vhosts"]:
            raise DeployFailed(f"no vhost {self.old} on the cluster (vhosts: {', '.join(facts['vhosts'])})")
        names = [q["name"] for q in (facts["old"] or {}).get("queues", []) if q["name"] in inv.celery.queues]
        user = inv.rabbitmq.app_user
        steps: list = [Change(f"shovel {self.old} {q} -> {new} {q}",
                              [M.ctl("set_parameter", "-p", self.old, "shovel", shovel_name(q),
                                     json.dumps(shovel_definition(self.old, new, user, q), sort_keys=True))])
                       for q in names]
        steps.append(Await(f"{self.old} is empty and no client uses it", old_vhost_fact(self.old),
                           lambda old: drained(old, names), WAIT,
                           f"{self.old} still holds tasks or clients: switch every producer (fab client-env); "
                           f"see `rabbitmqctl list_connections vhost user`", interval=2.0))
        steps += [Change(f"remove shovel {shovel_name(q)}",
                         [C.sh('rabbitmqctl clear_parameter -p "$1" shovel "$2" || true', self.old, shovel_name(q))])
                  for q in names]
        if self.delete_old:
            steps.append(Change(f"delete vhost {self.old}", [M.ctl("delete_vhost", self.old)]))
        return Plan(steps, notes=[f"moving {', '.join(names) or 'nothing'} from {self.old} to {new}"])
