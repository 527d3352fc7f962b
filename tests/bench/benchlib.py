"""What the daemon benchmarks share: the built binaries, the example config's
[model] and [training] as a user has them, and the real `mycel` CLI."""
import json, os, re, subprocess, sys, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "build", "bin")
DATA = "/usr/share/datasets/fashion-mnist"


def example_config(name, state, rest=True, kind=None):
    """A node config: [node] with no peer port, then the example's [model] and
    [training] (optionally with rest = false or another model kind)."""
    with open(os.path.join(ROOT, "configs", "mycel.example.toml")) as f:
        text = f.read()
    body = text[text.index("\n[model]") + 1 : text.index("\n[federation]")]
    if not rest:
        body = body.replace("\nrest = true", "\nrest = false")
    if kind:
        body = re.sub(r'\nkind = "[a-z_]+"', f'\nkind = "{kind}"', body, count=1)
    return f'[node]\nname = "{name}"\nstate_dir = "{state}"\nlisten = ""\n' + body


def mycel(cfg, *args):
    r = subprocess.run([os.path.join(BIN, "mycel"), "--config", cfg, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"mycel {' '.join(args)} failed: {r.stderr}")
    return r.stdout


def status(cfg):
    return json.loads(mycel(cfg, "status", "--json"))


def start_daemon(cfg, state, log_path):
    """Starts myceld on cfg and waits (up to 30 s) for its control socket."""
    log = open(log_path, "w")
    p = subprocess.Popen([os.path.join(BIN, "myceld"), "--config", cfg], stdout=log, stderr=log)
    for _ in range(300):
        if os.path.exists(os.path.join(state, "control.sock")):
            return p
        time.sleep(0.1)
    p.kill()
    sys.exit(f"myceld did not open its control socket within 30 s; see {log_path}")


def stop_daemons(procs):
    """SIGTERM to every daemon, then waits for each orderly shutdown."""
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=60)
