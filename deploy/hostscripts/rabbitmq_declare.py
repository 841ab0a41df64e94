# Runs ON a RabbitMQ host as root (a change): declares the dead-letter queue of the app vhost
# as a durable quorum queue through the local management API, with the admin login from the
# kit's root-only users file (the admin may configure that one queue and nothing else).
# argv: users_file port vhost queue. Idempotent: declaring an existing queue is a no-op.
import base64, json, sys, urllib.parse, urllib.request

users_file, port, vhost, queue = sys.argv[1:5]
with open(users_file) as f:
    admin = json.load(f)["admin"]
url = (f"http://127.0.0.1:{port}/api/queues/{urllib.parse.quote(vhost, safe='')}/"
       f"{urllib.parse.quote(queue, safe='')}")
body = json.dumps({"durable": True, "auto_delete": False, "arguments": {"x-queue-type": "quorum"}}).encode()
req = urllib.request.Request(url, data=body, method="PUT", headers={"content-type": "application/json"})
req.add_header("Authorization", "Basic " + base64.b64encode(f"{admin['user']}:{admin['password']}".encode()).decode())
with urllib.request.urlopen(req, timeout=10) as r:
    print(r.status)
