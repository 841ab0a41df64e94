# Runs ON a RabbitMQ host as root (a fact): how this node sees the cluster, as one JSON line.
# The local management API answers in milliseconds; it needs the admin login, read from the
# kit's root-only file. Before that login exists (first deploy) or when the API is down,
# `rabbitmqctl cluster_status` (an Erlang VM start, ~0.5 s) answers instead.
import base64, json, subprocess, sys, urllib.request

users_file, port = sys.argv[1], sys.argv[2]
out = {"source": None, "running": [], "members": [], "partitions": {}, "alarms": []}
try:
    with open(users_file) as f:
        admin = json.load(f)["admin"]
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/nodes")
    token = base64.b64encode(f"{admin['user']}:{admin['password']}".encode()).decode()
    req.add_header("Authorization", "Basic " + token)
    with urllib.request.urlopen(req, timeout=3) as r:
        nodes = json.load(r)
    out["source"] = "api"
    out["members"] = sorted(n["name"] for n in nodes)
    out["running"] = sorted(n["name"] for n in nodes if n.get("running"))
    out["partitions"] = {n["name"]: n.get("partitions", []) for n in nodes if n.get("partitions")}
    out["alarms"] = sorted([f"{n['name']}: memory" for n in nodes if n.get("mem_alarm")] +
                           [f"{n['name']}: disk" for n in nodes if n.get("disk_free_alarm")])
except Exception:
    proc = subprocess.run(["rabbitmqctl", "-q", "cluster_status", "--formatter", "json"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=60)
    try:
        status = json.loads(proc.stdout)
    except ValueError:
        print(json.dumps({"source": None}))
        sys.exit(0)
    out["source"] = "ctl"
    out["members"] = sorted(set(status.get("disk_nodes", [])) | set(status.get("ram_nodes", [])))
    out["running"] = sorted(status.get("running_nodes", []))
    out["partitions"] = {k: v for k, v in (status.get("partitions") or {}).items() if v}
    out["alarms"] = [f"{a.get('node')}: {a.get('type', a)}" if isinstance(a, dict) else str(a)
                     for a in status.get("alarms", [])]
print(json.dumps(out))
