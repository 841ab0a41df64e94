"""Flower behind nginx: every path needs credentials, the API lists every worker instance,
a real browser logs in and sees workers and tasks, and Flower rides out a broker restart."""
import base64
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from brokerutil import wait_for


@pytest.fixture(scope="module")
def flower(inv, hosts, first_deploy, tmp_path_factory):
    (h,) = inv.with_role("flower")
    from deploy.secrets import SecretStore
    password = SecretStore(inv.state_dir / "secrets.yaml").get("flower_admin_password").reveal()
    # Trust exactly the certificate the kit made on the host: proves its name/address match.
    cert = tmp_path_factory.mktemp("tls") / "flower.crt"
    cert.write_text(hosts[h.name].run("cat /etc/celery-kit/tls/flower.crt").stdout)
    ctx = ssl.create_default_context(cafile=str(cert))
    return {"base": f"https://{h.address}/{inv.flower.url_prefix}", "address": h.address,
            "auth": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode(), "ssl": ctx}


def get(flower, path, auth=True):
    req = urllib.request.Request(flower["base"] + path)
    if auth:
        req.add_header("Authorization", flower["auth"])
    try:
        with urllib.request.urlopen(req, context=flower["ssl"], timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.parametrize("path", ["/", "/workers", "/api/workers", "/metrics", "/healthcheck"])
def test_every_path_needs_credentials(flower, path):
    assert get(flower, path, auth=False)[0] == 401
    assert get(flower, path)[0] == 200


def test_http_redirects_to_https(flower):
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None
    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(f"http://{flower['address']}/flower/", timeout=10)
    assert e.value.code in (301, 308) and e.value.headers["Location"].startswith("https://")


def expected_workers(inv):
    from deploy.scale import host_scale
    return {f"w{i}@{h.name}" for h in inv.with_role("worker")
            for i in range(1, host_scale(inv, h).instances + 1)}


def test_api_lists_every_worker_instance(flower, inv):
    import json
    workers = wait_for(lambda: (s := set(json.loads(get(flower, "/api/workers?refresh=1")[1])))
                       >= expected_workers(inv) and s, 60, "all workers in /api/workers")
    assert workers >= expected_workers(inv)


def browser():
    from selenium import webdriver
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--ignore-certificate-errors", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--window-size=1400,900"):
        opts.add_argument(arg)
    service = webdriver.ChromeService(executable_path="/usr/bin/chromedriver")
    return webdriver.Chrome(options=opts, service=service)


def test_browser_logs_in_sees_workers_and_a_task(flower, inv, celery_app, tmp_path):
    from app.tasks import add
    driver = browser()
    try:
        # Log in: the Authorization header on every request (credentials never in a URL).
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": flower["auth"]}})
        driver.get(flower["base"] + "/workers")
        want = expected_workers(inv)
        # A refresh every 2 s at most: nginx limits requests per client (10/s, burst 20).
        wait_for(lambda: all(w in driver.page_source for w in want), 60, "workers in the page", interval=2)
        shot = Path(__file__).resolve().parents[2] / ".state" / "flower-workers.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        rows = driver.find_elements("css selector", "table tbody tr")
        assert {w for w in want if any(w in r.text for r in rows)} == want

        result = add.delay(40, 2)
        assert result.get(timeout=30) == 42
        driver.get(flower["base"] + "/tasks")
        wait_for(lambda: result.id in driver.page_source or driver.refresh(), 60, "the task in Flower's tasks view",
                 interval=2)
        driver.save_screenshot(str(shot.with_name("flower-tasks.png")))
    finally:
        driver.quit()


def test_flower_survives_a_rabbitmq_node_restart(flower, inv, hosts, celery_app):
    import json
    from app.tasks import add
    (h,) = inv.with_role("flower")
    pid = hosts[h.name].run("systemctl show -p MainPID --value flower").stdout.strip()
    hosts["node1"].run("sudo systemctl restart rabbitmq-server")
    result = add.delay(1, 2)
    assert result.get(timeout=60) == 3
    wait_for(lambda: result.id in json.loads(get(flower, "/api/tasks?limit=1000")[1]), 90,
             "Flower to see a task sent after the broker restart")
    assert hosts[h.name].run("systemctl show -p MainPID --value flower").stdout.strip() == pid
    assert get(flower, "/api/workers")[0] == 200
