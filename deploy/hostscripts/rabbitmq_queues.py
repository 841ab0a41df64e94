# Runs ON a RabbitMQ host as root (a fact, for `fab status`): the app vhost's queues from the
# local management API, with the admin login from the kit's root-only users file.
# argv: users_file port vhost. Prints one JSON list (or {"error": ...}).
import base64, json, sys, urllib.parse, urllib.request

users_file, port, vhost = sys.argv[1:4]
try:
    with open(users_file) as f:
        admin = json.load(f)["admin"]
    token = base64.b64encode(f"{admin['user']}:{admin['password']}".encode()).decode()
    url = f"http://127.0.0.1:{port}/api/queues/{urllib.parse.quote(vhost, safe='')}"
    req = urllib.request.Request(url + "?columns=name,type,messages,messages_unacknowledged,consumers,"
                                 "node,leader,members,online,slave_nodes,synchronised_slave_nodes,policy")
    req.add_header("Authorization", "Basic " + token)
    with urllib.request.urlopen(req, timeout=5) as r:
        print(json.dumps(json.load(r)))
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
