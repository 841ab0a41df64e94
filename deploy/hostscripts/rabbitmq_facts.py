# Runs ON a RabbitMQ host as root (a fact), printing one JSON document:
#   "view":  how this node sees the cluster (running, members, partitions, alarms);
#   "state": the cluster-level objects the kit manages (users, vhost, permissions, policies).
# Both come from the local management API, in milliseconds, with the admin login read from the
# kit's root-only users file; before that login exists (first deploy) or when the API is down,
# the view comes from `rabbitmqctl cluster_status` (an Erlang VM start, ~0.5 s) and the state is
# unknown ({"ok": false}: every step is planned, each idempotent). One Python start for both.
# argv: users_file port vhost dead_letter_queue parts (comma-separated: view,state)
import base64, hashlib, json, subprocess, sys, urllib.request

users_file, port, vhost, dlq, parts = sys.argv[1:6]
base = f"http://127.0.0.1:{port}/api"
token = None
try:
    with open(users_file) as f:
        logins = json.load(f)
    admin = logins["admin"]
    token = base64.b64encode(f"{admin['user']}:{admin['password']}".encode()).decode()
except Exception:
    logins = {}


def get(path):
    if token is None:
        raise RuntimeError("no admin login yet")
    req = urllib.request.Request(base + path)
    req.add_header("Authorization", "Basic " + token)
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def password_ok(user, pw):
    """RabbitMQ's sha256 scheme: base64(4-byte salt + sha256(salt + password))."""
    if pw is None or user.get("hashing_algorithm") != "rabbit_password_hashing_sha256":
        return None
    raw = base64.b64decode(user.get("password_hash", ""))
    return hashlib.sha256(raw[:4] + pw.encode()).digest() == raw[4:]


def view():
    out = {"source": None, "running": [], "members": [], "partitions": {}, "alarms": []}
    try:
        nodes = get("/nodes")
        out["source"] = "api"
        out["members"] = sorted(n["name"] for n in nodes)
        out["running"] = sorted(n["name"] for n in nodes if n.get("running"))
        out["partitions"] = {n["name"]: n.get("partitions", []) for n in nodes if n.get("partitions")}
        out["alarms"] = sorted([f"{n['name']}: memory" for n in nodes if n.get("mem_alarm")] +
                               [f"{n['name']}: disk" for n in nodes if n.get("disk_free_alarm")])
        return out
    except Exception:
        pass
    proc = subprocess.run(["rabbitmqctl", "-q", "cluster_status", "--formatter", "json"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=60)
    try:
        status = json.loads(proc.stdout)
    except ValueError:
        return None
    out["source"] = "ctl"
    out["members"] = sorted(set(status.get("disk_nodes", [])) | set(status.get("ram_nodes", [])))
    out["running"] = sorted(status.get("running_nodes", []))
    out["partitions"] = {k: v for k, v in (status.get("partitions") or {}).items() if v}
    out["alarms"] = [f"{a.get('node')}: {a.get('type', a)}" if isinstance(a, dict) else str(a)
                     for a in status.get("alarms", [])]
    return out


def tags_of(value):
    # A list on RabbitMQ 4, a comma-separated string in some 3.x exports.
    items = value if isinstance(value, list) else (value or "").split(",")
    return sorted(t.strip() for t in items if t and t.strip())


def state():
    """From one export of the definitions (users, vhosts, permissions, policies, queues)."""
    out = {"ok": False}
    try:
        d = get("/definitions")
        known = {v["user"]: v["password"] for v in logins.values()}
        out["users"] = {u["name"]: {"tags": tags_of(u.get("tags")), "password_ok": password_ok(u, known.get(u["name"]))}
                        for u in d.get("users", [])}
        out["vhosts"] = [v["name"] for v in d.get("vhosts", [])]
        for v in d.get("vhosts", []):
            if v["name"] == vhost:
                out["default_queue_type"] = (v.get("default_queue_type") or
                                             (v.get("metadata") or {}).get("default_queue_type") or "classic")
        out["permissions"] = {p["user"]: [p["configure"], p["write"], p["read"]]
                              for p in d.get("permissions", []) if p["vhost"] == vhost}
        out["policies"] = {p["name"]: {"pattern": p["pattern"], "apply-to": p["apply-to"],
                                       "definition": p["definition"], "priority": p["priority"]}
                           for p in d.get("policies", []) if p["vhost"] == vhost}
        out["dlq"] = next(((q.get("arguments") or {}).get("x-queue-type", "classic") for q in d.get("queues", [])
                           if q["vhost"] == vhost and q["name"] == dlq), False)
        out["ok"] = True
    except Exception as exc:   # API down, plugin off, admin not created yet
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


wanted = parts.split(",")
print(json.dumps({"view": view() if "view" in wanted else None,
                  "state": state() if "state" in wanted else None}))
