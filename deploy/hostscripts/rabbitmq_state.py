# Runs ON a RabbitMQ host as root (a fact): the cluster-level objects the kit manages, read
# from the local management API with the admin login from the kit's root-only users file,
# printed as one JSON document. argv: users_file port vhost dead_letter_queue
import base64, hashlib, json, sys, urllib.error, urllib.parse, urllib.request

users_file, port, vhost, dlq = sys.argv[1:5]
base = f"http://127.0.0.1:{port}/api"
out = {"ok": False}


def password_ok(user, pw):
    """RabbitMQ's sha256 scheme: base64(4-byte salt + sha256(salt + password))."""
    if pw is None or user.get("hashing_algorithm") != "rabbit_password_hashing_sha256":
        return None
    raw = base64.b64decode(user.get("password_hash", ""))
    return hashlib.sha256(raw[:4] + pw.encode()).digest() == raw[4:]


try:
    with open(users_file) as f:
        logins = json.load(f)
    admin = logins["admin"]
    token = base64.b64encode(f"{admin['user']}:{admin['password']}".encode()).decode()

    def get(path):
        req = urllib.request.Request(base + path)
        req.add_header("Authorization", "Basic " + token)
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)

    vq = urllib.parse.quote(vhost, safe="")
    known = {v["user"]: v["password"] for v in logins.values()}
    out["users"] = {u["name"]: {"tags": sorted(t for t in (u.get("tags") or []) if t),
                                "password_ok": password_ok(u, known.get(u["name"]))}
                    for u in get("/users")}
    vhosts = get("/vhosts")
    out["vhosts"] = [v["name"] for v in vhosts]
    for v in vhosts:
        if v["name"] == vhost:
            out["default_queue_type"] = (v.get("default_queue_type") or
                                         (v.get("metadata") or {}).get("default_queue_type") or "classic")
    present = vhost in out["vhosts"]
    out["permissions"] = {p["user"]: [p["configure"], p["write"], p["read"]]
                          for p in get(f"/vhosts/{vq}/permissions")} if present else {}
    out["policies"] = {p["name"]: {"pattern": p["pattern"], "apply-to": p["apply-to"],
                                   "definition": p["definition"], "priority": p["priority"]}
                       for p in get(f"/policies/{vq}")} if present else {}
    out["dlq"] = False
    if present:
        try:
            out["dlq"] = get(f"/queues/{vq}/{urllib.parse.quote(dlq, safe='')}").get("type")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
    out["ok"] = True
except Exception as exc:   # API down, plugin off, admin not created yet: every step is planned
    out["error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
