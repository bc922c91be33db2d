"""`make install` as a system service: into a temporary DESTDIR with
PREFIX=/usr/local, then the tree, the paths the systemd units name, the
configuration they read, and `systemd-analyze verify` on the installed units
(Debian's systemd package; .ci/run installs it). A reinstall keeps an edited
/etc/gptoss, and `make uninstall` leaves it.

systemd does not run as PID 1 here: `systemd-analyze verify --root=ROOT`
loads the units from ROOT and checks that their commands exist in it. ROOT is
a copy (hard links) of the DESTDIR tree, plus the host's system unit folder
(sysinit.target and the other targets the units' default dependencies name)
and stand-ins for the system commands the units run (nats-server, kill),
each checked first to exist on this machine.

The binaries come from `make build` (make test-e2e builds them first); make
is run with -o build so that this test does not rebuild them.
"""
import os
import re
import shutil
import stat
import subprocess

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PREFIX = "/usr/local"
UNITDIR = PREFIX + "/lib/systemd/system"
UNITS = ["coordinator.service", "nats.service", "worker@.service"]
KERNELS = os.path.join(ROOT, "build", "libgptoss_kernels.so")
LLGUIDANCE = os.path.join(ROOT, "build", "llguidance", "libllguidance.so")
LLG_FILES = ("libllguidance.so", "libllguidance_pystub.so")
SYSTEM_UNITS = "/usr/lib/systemd/system"

pytestmark = pytest.mark.skipif(
    not all(os.access(os.path.join(ROOT, "bin", b), os.X_OK) for b in ("coordinator", "worker")),
    reason="needs bin/coordinator and bin/worker (make build)")


def make(*args):
    r = subprocess.run(["make", "--no-print-directory", "-C", ROOT, "-o", "build", *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"make {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def tree(root):
    out = set()
    for d, _, files in os.walk(root):
        for f in files:
            out.add("/" + os.path.relpath(os.path.join(d, f), root))
    return out


def unit_settings(path):
    """(key, value) of every setting of a unit file, in order."""
    out = []
    for line in open(path):
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out.append((k.strip(), v.strip()))
    return out


def read_env(path):
    env = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v
    return env


@pytest.fixture(scope="module")
def dest(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("destdir"))
    out = make("install", f"DESTDIR={d}", f"PREFIX={PREFIX}")
    return d, out


def test_tree(dest):
    d, out = dest
    want = {PREFIX + "/bin/coordinator", PREFIX + "/bin/worker",
            *(UNITDIR + "/" + u for u in UNITS),
            *(PREFIX + "/share/gptoss/" + f for f in ("env.example", "coordinator.yaml", "nats.conf", "profiles.yaml")),
            "/etc/gptoss/env", "/etc/gptoss/coordinator.yaml", "/etc/gptoss/nats.conf"}
    if os.path.exists(KERNELS):
        want.add(PREFIX + "/lib/libgptoss_kernels.so")
    else:
        assert "skipped" in out and "make kernels" in out  # said, not silent
    if os.path.exists(LLGUIDANCE):
        want.update(PREFIX + "/lib/llguidance/" + f for f in LLG_FILES)
    else:
        assert "make llguidance" in out
    assert tree(d) == want
    for b in ("coordinator", "worker"):
        assert os.access(f"{d}{PREFIX}/bin/{b}", os.X_OK)
    # The env file holds the NATS token (and API keys): root's alone.
    assert stat.S_IMODE(os.stat(f"{d}/etc/gptoss/env").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(f"{d}{UNITDIR}/nats.service").st_mode) == 0o644
    assert open(f"{d}/etc/gptoss/coordinator.yaml").read() == open(os.path.join(ROOT, "configs", "coordinator.yaml")).read()


def test_units_name_only_installed_or_system_paths(dest):
    d, _ = dest
    installed = tree(d)
    nats = shutil.which("nats-server")
    for u in UNITS:
        settings = unit_settings(f"{d}{UNITDIR}/{u}")
        keys = dict(settings)
        assert keys.get("DynamicUser") == "yes" and keys.get("User") == "gptoss", f"{u} runs as root"
        assert keys.get("StateDirectory") == "gptoss", u
        for k, v in settings:
            for p in re.findall(r"(?<![\w:/])/[\w./@%-]+", v):
                if p.startswith("/var/lib/gptoss"):
                    continue  # StateDirectory=gptoss: systemd makes it
                if p.startswith(("/etc/gptoss/", PREFIX + "/")):
                    if p == PREFIX + "/lib/libgptoss_kernels.so" and not os.path.exists(KERNELS):
                        continue  # not built here: install said it skipped it
                    if p == PREFIX + "/lib/llguidance":
                        # A directory: the library's (GPTOSS_LLGUIDANCE).
                        assert not os.path.exists(LLGUIDANCE) or p + "/libllguidance.so" in installed, f"{u}: {k}={v}"
                        continue
                    assert p in installed, f"{u}: {k}={v}: {p} was not installed"
                elif p.endswith("/nats-server") and not nats:
                    continue  # no nats-server here (test_procfile says so too)
                else:
                    assert os.path.isfile(p) and os.access(p, os.X_OK), f"{u}: {k}={v}: {p} is not on this system"
    exec_nats = dict(unit_settings(f"{d}{UNITDIR}/nats.service"))["ExecStart"].split()[0]
    if nats:
        assert exec_nats == nats, "nats.service runs another nats-server than this system's"
    # -js -sd: JetStream in the state directory systemd makes for the unit.
    assert "-sd /var/lib/gptoss/nats" in dict(unit_settings(f"{d}{UNITDIR}/nats.service"))["ExecStart"]


def test_env_file_defines_what_the_units_read(dest):
    d, _ = dest
    env = read_env(f"{d}/etc/gptoss/env")
    assert env["GPTOSS_NATS_TOKEN"] and int(env["GPTOSS_TP"]) >= 1
    for u in UNITS:
        settings = unit_settings(f"{d}{UNITDIR}/{u}")
        assert ("EnvironmentFile", "/etc/gptoss/env") in settings, u
        own = {v.split("=", 1)[0] for k, v in settings if k == "Environment"}
        for k, v in settings:
            if k.startswith("Exec"):
                for name in re.findall(r"\$\{?(\w+)\}?", v):
                    assert name == "MAINPID" or name in env or name in own, f"{u}: {k} reads ${name}, which /etc/gptoss/env lacks"


@pytest.mark.skipif(not shutil.which("nats-server"), reason="needs nats-server (Debian nats-server)")
def test_nats_conf_with_the_env_token(dest):
    d, _ = dest
    env = dict(os.environ, **read_env(f"{d}/etc/gptoss/env"))
    r = subprocess.run(["nats-server", "-c", f"{d}/etc/gptoss/nats.conf", "-t"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def verify_root(d, tmp):
    """A root for systemd-analyze verify: the installed tree, the host's
    system units, and stand-ins for the system commands the units run."""
    root = os.path.join(tmp, "root")
    shutil.copytree(d, root, symlinks=True, copy_function=os.link)
    os.makedirs(os.path.join(root, "usr", "lib", "systemd"), exist_ok=True)
    shutil.copytree(SYSTEM_UNITS, os.path.join(root, "usr", "lib", "systemd", "system"), symlinks=True)
    for u in UNITS:
        for k, v in unit_settings(os.path.join(root, UNITDIR.lstrip("/"), u)):
            if k.startswith("Exec"):
                cmd = v.lstrip("-@:+!").split()[0]
                target = os.path.join(root, cmd.lstrip("/"))
                if not os.path.exists(target):
                    assert os.access(cmd, os.X_OK), f"{u}: {k}: {cmd} is not on this system"
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    with open(target, "w") as f:
                        f.write("#!/bin/sh\n")
                    os.chmod(target, 0o755)
    return root


@pytest.mark.skipif(not shutil.which("systemd-analyze") or not os.path.isdir(SYSTEM_UNITS),
                    reason="needs systemd-analyze (Debian systemd)")
@pytest.mark.skipif(not shutil.which("nats-server"), reason="needs nats-server (Debian nats-server)")
def test_systemd_analyze_verify(dest, tmp_path):
    d, _ = dest
    root = verify_root(d, str(tmp_path))
    units = [UNITDIR + "/" + u for u in UNITS] + ["worker@0.service", "worker@1.service"]
    r = subprocess.run(["systemd-analyze", "verify", f"--root={root}", *units],
                       capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    # Unknown keys and other warnings leave the status 0: none may name our units.
    ours = [line for line in out.splitlines() if any(u.split("@")[0].split(".")[0] in line for u in UNITS)]
    assert not ours, out


def test_verify_catches_a_missing_binary(dest, tmp_path):
    """The check above is a real one: without the worker binary it fails."""
    if not shutil.which("systemd-analyze") or not shutil.which("nats-server"):
        pytest.skip("needs systemd-analyze and nats-server")
    d, _ = dest
    root = verify_root(d, str(tmp_path))
    os.remove(os.path.join(root, PREFIX.lstrip("/"), "bin", "worker"))
    r = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "worker@0.service"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "/usr/local/bin/worker" in r.stdout + r.stderr


def test_reinstall_keeps_config_and_uninstall_leaves_it(tmp_path):
    d = str(tmp_path / "dest")
    make("install", f"DESTDIR={d}", f"PREFIX={PREFIX}")
    env = f"{d}/etc/gptoss/env"
    with open(env, "a") as f:
        f.write("GPTOSS_API_KEYS=sk-operator\n")
    edited = open(env).read()
    out = make("install", f"DESTDIR={d}", f"PREFIX={PREFIX}")
    assert open(env).read() == edited and "kept" in out
    make("uninstall", f"DESTDIR={d}", f"PREFIX={PREFIX}")
    assert tree(d) == {"/etc/gptoss/env", "/etc/gptoss/coordinator.yaml", "/etc/gptoss/nats.conf"}
    assert open(env).read() == edited


def test_other_prefix(tmp_path):
    """A PREFIX off systemd's unit path puts the units in /etc/systemd/system,
    naming that PREFIX's binaries."""
    d = str(tmp_path / "dest")
    make("install", f"DESTDIR={d}", "PREFIX=/opt/gptoss")
    unit = f"{d}/etc/systemd/system/coordinator.service"
    assert dict(unit_settings(unit))["ExecStart"].startswith("/opt/gptoss/bin/coordinator ")
    worker = dict(unit_settings(f"{d}/etc/systemd/system/worker@.service"))
    assert worker["ExecStart"].startswith("/opt/gptoss/bin/worker ")
    assert os.access(f"{d}/opt/gptoss/bin/worker", os.X_OK)
    make("uninstall", f"DESTDIR={d}", "PREFIX=/opt/gptoss")
    assert not os.path.exists(unit) and not os.path.exists(f"{d}/opt/gptoss/bin/worker")
