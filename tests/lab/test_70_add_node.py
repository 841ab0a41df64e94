"""Growing and shrinking the RabbitMQ cluster through the inventory, as the README says:
a node added to the inventory joins on the next deploy; a removed one leaves cleanly."""
import json
from dataclasses import replace

from brokerutil import api, wait_for
from conftest import fab, inventory_variant, lab_host, summary_rows
from deploy.lab import runtime


def inventory_with_node4(tmp_path):
    return inventory_variant(tmp_path, ("\nrabbitmq:\n", "  node4:\n    address: 10.77.0.14\n    roles: [rabbitmq]\n\nrabbitmq:\n"))


def running_nodes(host) -> set[str]:
    return set(json.loads(host.run("sudo rabbitmqctl cluster_status --formatter json").stdout)["running_nodes"])


def ha_params(inv, secrets):
    policy = [p for p in api(inv, secrets, "/policies/%2Fcelery") if p["name"] == "celery-kit-ha"][0]
    return policy["definition"].get("ha-params")


def test_node_added_to_inventory_joins_and_removed_node_leaves(lab, hosts, inv, secrets, tmp_path, first_deploy,
                                                               queue_mode):
    mirrored = queue_mode == "mirrored"
    assert runtime.up(replace(lab, count=4))["node4"] == "started"
    out = fab("deploy", "--inventory", str(inventory_with_node4(tmp_path))).stdout
    assert "WARNING: 4 RabbitMQ nodes: an even count" in out
    four = {f"rabbit@node{i}" for i in range(1, 5)}
    assert running_nodes(hosts["node1"]) == four
    assert ha_params(inv, secrets) == (3 if mirrored else None)          # majority of 4 mirrors
    assert hosts["node2"].run("getent hosts node4").stdout.split()[0] == "10.77.0.14"
    # Workers fail over to the new node too: it is in their broker URL list.
    assert "@10.77.0.14:5672/" in hosts["node2"].run("sudo cat /etc/celery-kit/celery.env").stdout

    # Removal, as documented: the node resets itself out of the cluster, then the
    # inventory without it is deployed (node list, mirror count and broker URLs follow).
    node4 = lab_host(lab, "10.77.0.14")
    assert node4.run("sudo rabbitmqctl stop_app && sudo rabbitmqctl reset").rc == 0
    three = {f"rabbit@node{i}" for i in range(1, 4)}
    wait_for(lambda: running_nodes(hosts["node1"]) == three, 60, "node4 gone from the cluster")
    out = fab("deploy").stdout
    assert summary_rows(out)["node1"][0] == "changed"
    status = json.loads(hosts["node1"].run("sudo rabbitmqctl cluster_status --formatter json").stdout)
    assert set(status["running_nodes"]) == three and set(status["disk_nodes"]) == three
    assert ha_params(inv, secrets) == (2 if mirrored else None)
    runtime.stop_one(lab, "node4")
