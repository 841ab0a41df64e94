"""Entry points of the kit. Thin on purpose: tasks live in deploy/ and load the inventory."""
from invoke import Collection

from deploy import tasks
from deploy.lab.tasks import lab

ns = Collection(lab, tasks.rabbitmq, tasks.deploy, tasks.scale_workers, tasks.rollback,
                tasks.client_env, tasks.status, tasks.logs, tasks.flower, tasks.verify, tasks.unlock,
                tasks.trust_hosts, tasks.rotate_secrets)
# Fabric's -H would run every task once per host; the kit reads it as a host limit instead:
# fabric.yaml names the kit's executor (a collection's configuration comes too late for that).
