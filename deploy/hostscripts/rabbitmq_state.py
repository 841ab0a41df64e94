# Runs ON a RabbitMQ host (python3 -c): reads cluster state from the local management API
# and prints one JSON document. Credentials arrive on stdin, never in argv:
#   line 1: admin password, line 2: app password.  argv: admin_user app_user port vhost
import base64, hashlib, json, sys, urllib.error, urllib.parse, urllib.request

admin, app, port, vhost = sys.argv[1:5]
admin_pw, app_pw = (sys.stdin.read().split("\n") + ["", ""])[:2]
base = f"http://127.0.0.1:{port}/api"


def get(path, user, pw):
    req = urllib.request.Request(base + path)
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode())
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def password_ok(user, pw):
    """RabbitMQ's sha256 scheme: base64(4-byte salt + sha256(salt + password))."""
    if pw is None or user.get("hashing_algorithm") != "rabbit_password_hashing_sha256":
        return None
    raw = base64.b64decode(user.get("password_hash", ""))
    return hashlib.sha256(raw[:4] + pw.encode()).digest() == raw[4:]


out = {"ok": False}
try:
    vq = urllib.parse.quote(vhost, safe="")
    out["nodes"] = [{"name": n["name"], "running": n.get("running", False)}
                    for n in get("/nodes", admin, admin_pw)]
    known = {admin: admin_pw, app: app_pw}
    out["users"] = {u["name"]: {"tags": u.get("tags", []),
                                "password_ok": password_ok(u, known.get(u["name"]))}
                    for u in get("/users", admin, admin_pw)}
    out["vhosts"] = [v["name"] for v in get("/vhosts", admin, admin_pw)]
    out["permissions"] = {p["user"]: [p["configure"], p["write"], p["read"]]
                          for p in get(f"/vhosts/{vq}/permissions", admin, admin_pw)} \
        if vhost in out["vhosts"] else {}
    out["policies"] = {p["name"]: {"pattern": p["pattern"], "apply-to": p["apply-to"],
                                   "definition": p["definition"], "priority": p["priority"]}
                       for p in get(f"/policies/{vq}", admin, admin_pw)} \
        if vhost in out["vhosts"] else {}
    out["ok"] = True
except Exception as exc:   # API down, plugin off, admin not created yet: caller falls back
    out["error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
