#!/usr/bin/env python3
"""The dashboard ([node] ui_listen) in a real headless Chromium.

A real myceld trains on Fashion-MNIST with the dashboard on a free loopback
port. The test checks, in the browser, that the page renders the
accuracy/loss plot from the daemon's history and that its Pause button
pauses the daemon (as `mycel status` then says) and Resume resumes it; a
stranger's pending peer is accepted with its button. Outside the browser, it
checks what another site or user could try: the token is in no page and no
log line, and a change without it, with a wrong one, or with another Host
is refused and changes nothing.

    dashboard_test.py --bin-dir build/bin
"""
import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

FASHION = "/usr/share/datasets/fashion-mnist"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(what, pred, timeout=90, interval=0.3):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out waiting for " + what)


class Node:
    def __init__(self, bin_dir, root, name, node_lines):
        self.bin_dir = bin_dir
        self.config = os.path.join(root, name + ".toml")
        self.state = os.path.join(root, name + "-state")
        self.log = os.path.join(root, name + ".log")
        with open(self.config, "w") as f:
            f.write(f'[node]\nname = "{name}"\nstate_dir = "{self.state}"\n{node_lines}'
                    '[training]\neval_interval_s = 0.5\nmax_examples = 4000\n'
                    '[federation]\nround_interval_s = 0.5\n')
        self.proc = None

    def start(self, env=None):
        self.proc = subprocess.Popen([os.path.join(self.bin_dir, "myceld"), "-c", self.config],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        wait_for("the control socket", lambda: self.mycel("status").returncode == 0, 60)

    def mycel(self, *args):
        return subprocess.run([os.path.join(self.bin_dir, "mycel"), "-c", self.config, *args],
                              capture_output=True, text=True, timeout=120)

    def json(self, *args):
        r = self.mycel(*args, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def request(port, method, path, host=None, token=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Host": host or f"127.0.0.1:{port}"}
    if token is not None:
        headers["X-Mycel-Token"] = token
    c.request(method, path, headers=headers)
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, body


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]:
        opts.add_argument(flag)
    opts.add_argument("--user-data-dir=" + tempfile.mkdtemp(prefix="mycel-chromium-"))
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="mycel-ui-")
    ui_port, peer_port = free_port(), free_port()
    hub = Node(args.bin_dir, root, "hub",
               f'listen = "127.0.0.1:{peer_port}"\nui_listen = "127.0.0.1:{ui_port}"\ndiscover = true\n')
    stranger = Node(args.bin_dir, root, "stranger", "dial_out = true\n")
    driver = None
    try:
        # LAN discovery on, but never on the machine's own bus: it has none to reach.
        no_bus = "unix:path=" + os.path.join(root, "no-bus")
        hub.start({"DBUS_SYSTEM_BUS_ADDRESS": no_bus})
        # The address with its token: from `mycel status`, the owner's socket only.
        ui_url = hub.json("status")["ui_url"]
        assert ui_url.startswith(f"http://127.0.0.1:{ui_port}/#"), ui_url
        token = ui_url.split("#", 1)[1]
        assert len(token) == 32, token
        assert token not in open(hub.log).read(), "the token is in the log"
        r = hub.mycel("ingest", "--labels", "0,1,2,3,4,5,6,7,8,9",
                      f"{FASHION}/t10k-images-idx3-ubyte.gz", f"{FASHION}/t10k-labels-idx1-ubyte.gz")
        assert r.returncode == 0, r.stderr
        history = wait_for("three validation passes in the history",
                           lambda: (lambda h: h if len(h["passes"]) >= 3 else None)(hub.json("history")))
        first = history["passes"][0]
        assert 0 <= first["val_accuracy"] <= 1 and first["steps"] >= 0, first
        table = hub.mycel("history")
        assert table.returncode == 0 and "ACCURACY" in table.stdout, table.stdout
        assert hub.json("history", "--since", "1h")["passes"], "--since 1h lost the passes"
        assert hub.json("history", "--since", "2099-01-01")["passes"] == []

        # What another site could try: no token, a wrong token, another Host, GET for a change.
        code, page = request(ui_port, "GET", "/")
        assert code == 200 and "mycel" in page
        assert token not in page, "the page gives the token to whoever fetches it"
        assert request(ui_port, "POST", "/api/pause")[0] == 403
        assert request(ui_port, "POST", "/api/pause", token="0" * 32)[0] == 403
        assert request(ui_port, "POST", "/api/pause", host="evil.example", token=token)[0] == 403
        assert request(ui_port, "GET", "/", host=f"evil.example:{ui_port}")[0] == 403
        assert request(ui_port, "GET", "/api/pause")[0] == 405
        assert hub.json("status")["state"] != "paused", "a refused request paused the daemon"

        driver = browser()
        # Without the token the page shows but says it cannot change anything.
        driver.get(f"http://127.0.0.1:{ui_port}/")
        wait_for("the no-token notice", lambda: driver.find_element(By.ID, "notoken").is_displayed(), 15)
        driver.get(ui_url)
        wait_for("the token to leave the address bar", lambda: "#" not in driver.current_url, 15)
        assert not driver.find_element(By.ID, "notoken").is_displayed()
        # The plot: one point per validation pass, drawn from the history.
        points = wait_for("the accuracy line", lambda: driver.find_element(By.ID, "acc").get_attribute("points"), 30)
        assert len(points.split()) >= 3, points
        assert driver.find_element(By.ID, "loss").get_attribute("points"), "no loss line"
        wait_for("the state", lambda: driver.find_element(By.ID, "state").text not in ("", "…"), 15)
        # Discovery is on and cannot announce: the page says so, and why.
        disc = driver.find_element(By.ID, "discovery")
        assert disc.is_displayed(), "the discovery line is hidden"
        assert disc.text.startswith("LAN discovery: off: no D-Bus system bus at " + no_bus), disc.text
        assert disc.get_attribute("class") == "bad", disc.get_attribute("class")

        driver.find_element(By.ID, "pause").click()
        wait_for("the daemon to pause", lambda: hub.json("status")["state"] == "paused", 15)
        wait_for("the page to say paused", lambda: driver.find_element(By.ID, "state").text == "paused", 15)
        driver.find_element(By.ID, "resume").click()
        wait_for("the daemon to resume", lambda: hub.json("status")["state"] != "paused", 15)

        # A stranger pins the hub and calls it: pending, accepted with the page's button.
        stranger.start()
        key = hub.mycel("id").stdout.split()[0]
        r = stranger.mycel("peers", "add", "hub", key, f"127.0.0.1:{peer_port}")
        assert r.returncode == 0, r.stdout + r.stderr
        button = wait_for("the accept button", lambda: (driver.find_elements(By.CSS_SELECTOR, "button.accept") or [None])[0], 60)
        button.click()
        wait_for("the stranger to be pinned",
                 lambda: any(p["name"] == "stranger" for p in hub.json("peers")["peers"]), 15)
        assert os.path.exists(os.path.join(root, "hub.peers.d", "stranger.toml"))
        wait_for("the page to list the stranger as a peer",
                 lambda: "stranger" in driver.find_element(By.ID, "peers").text, 15)
        print("dashboard: plot, discovery, pause, resume, accept and the refusals checked")
    except Exception:
        for n in (hub, stranger):
            if os.path.exists(n.log):
                sys.stderr.write(f"--- {n.log}\n" + open(n.log).read()[-4000:])
        raise
    finally:
        if driver:
            driver.quit()
        hub.stop()
        stranger.stop()
        if not os.environ.get("MYCEL_IT_KEEP"):
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
