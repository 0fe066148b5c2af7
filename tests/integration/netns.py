"""Network namespaces for fault tests: each region (and the store) in its own
network namespace, all joined by veth pairs to a bridge that lives in a
namespace of its own (the "hub"), so the host's network is never touched.

    net = Network(["eu", "us", "ap", "store"])   # FAILS (HarnessError) when
                                                 # namespaces cannot be made
    net.addr("eu")           # 10.77.0.11: where eu's processes listen
    net.argv("eu", [...])    # ["ip", "netns", "exec", <ns>, ...]
    with net.inside("eu"):   # this thread's sockets are made in eu's namespace
        ...
    net.cut("eu")            # eu's link to the bridge down (both ways)
    net.heal("eu")
    net.iptables("eu", "-A", "OUTPUT", ...)      # rules inside eu's namespace
    net.loss("eu", 0.2)      # random loss both ways on eu's link (no netem here)
    net.clear_rules("eu")

Layout: namespaces mrd<pid>x<n>-<name> (unique per run); in the hub, bridge
br0 = 10.77.0.1/24 and one veth end h-<name> per member namespace; in each
member namespace the other end v0 = 10.77.0.<10+i>/24 and lo. The range is
private and exists only inside these namespaces, so parallel runs cannot
collide.

The test process itself talks to everything from the hub: creating a
Network moves the calling (main) thread into the hub namespace (setns is
per thread; threads and subprocesses started from it inherit it), and
cleanup moves it back and deletes the namespaces. A thread that must act as
a client inside a region (a sampler that writes to its region's PostgreSQL
while the region is cut off) uses inside(name). Processes run in a region
with argv(name, ...) (ip netns exec keeps the PID: signals reach the
program itself).

Registered with meridian_harness: deleted when the test that made it ends
(after the processes started later, which are cleaned first), and named in
the harness watchdog's state so it deletes them if the interpreter dies.
"""

import ctypes
import ipaddress
import os
import shutil
import socket
import threading

import meridian_harness as h

CLONE_NEWNET = 0x40000000
SUBNET = ipaddress.ip_network("10.77.0.0/24")
HUB_ADDR = "10.77.0.1"

_libc = ctypes.CDLL(None, use_errno=True)
_counter = [0]
_lock = threading.Lock()


def _setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise h.HarnessError("setns(%s): %s" % (path, os.strerror(err)))
    finally:
        os.close(fd)


def _ip(*args, check=True):
    return h.run(["ip"] + [str(a) for a in args], timeout_s=20, check=check)


def require():
    """Raises HarnessError (the test FAILS, it is not skipped) unless this
    process can make network namespaces: root, ip (iproute2), iptables."""
    if os.geteuid() != 0:
        raise h.HarnessError("network-namespace tests need root")
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            raise h.HarnessError("network-namespace tests need %s (tests/lib/deps.sh installs it)"
                                 % tool)


class Network:
    def __init__(self, names, enter_hub=True):
        require()
        with _lock:
            _counter[0] += 1
            n = _counter[0]
        self.prefix = "mrd%dx%d" % (os.getpid(), n)
        self.names = list(names)
        self.addrs = {nm: str(SUBNET.network_address + 11 + i)
                      for i, nm in enumerate(self.names)}
        self.watchdog_netns = []           # namespace names, for cleanup
        self._home = None           # fd of the main thread's own namespace
        self._home_tid = None
        h._register(self)
        self._build()
        if enter_hub:
            self._enter_hub()

    # -- names

    def ns(self, name):
        return "%s-%s" % (self.prefix, name)

    def addr(self, name):
        """The address of name's namespace on the bridge ("hub": the bridge)."""
        return HUB_ADDR if name == "hub" else self.addrs[name]

    def argv(self, name, argv):
        """argv run inside name's namespace (same PID: ip execs it)."""
        return ["ip", "netns", "exec", self.ns(name)] + [str(a) for a in argv]

    # -- set-up / tear-down

    def _add_ns(self, name):
        _ip("netns", "add", self.ns(name))
        self.watchdog_netns.append(self.ns(name))
        h._write_watchdog_state()
        _ip("-n", self.ns(name), "link", "set", "lo", "up")

    def _build(self):
        hub = self.ns("hub")
        self._add_ns("hub")
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "addr", "add", "%s/%d" % (HUB_ADDR, SUBNET.prefixlen), "dev", "br0")
        _ip("-n", hub, "link", "set", "br0", "up")
        for nm in self.names:
            self._add_ns(nm)
            _ip("-n", hub, "link", "add", "h-" + nm, "type", "veth", "peer", "name", "v0",
                "netns", self.ns(nm))
            _ip("-n", hub, "link", "set", "h-" + nm, "master", "br0", "up")
            _ip("-n", self.ns(nm), "addr", "add", "%s/%d" % (self.addrs[nm], SUBNET.prefixlen),
                "dev", "v0")
            _ip("-n", self.ns(nm), "link", "set", "v0", "up")
        # the bridge forwards once its ports are up; check every member
        # reaches the hub and the hub reaches every member (ARP included)
        for nm in self.names:
            h.wait_until(lambda nm=nm: self._reach(nm), 10, interval_s=0.1,
                         what="%s's namespace up on the bridge" % nm)

    def _reach(self, nm):
        # a TCP connect from nm to a closed port of the hub is refused (RST)
        # once the link works: no ping needed (iputils-ping is not installed)
        def connect():
            s = socket.socket()
            s.settimeout(0.5)
            try:
                s.connect((HUB_ADDR, 9))
            except ConnectionRefusedError:
                return True
            except OSError:
                return False
            finally:
                s.close()
            return False
        return run_in(self, nm, connect)

    def _enter_hub(self):
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self._home_tid = threading.get_ident()
        _setns("/run/netns/" + self.ns("hub"))

    def leave_hub(self):
        """Moves the thread that made this Network back to its namespace."""
        if self._home is not None and threading.get_ident() == self._home_tid:
            try:
                if _libc.setns(self._home, CLONE_NEWNET) != 0:
                    raise h.HarnessError("setns back: %s" % os.strerror(ctypes.get_errno()))
            finally:
                os.close(self._home)
                self._home = None

    def _cleanup(self):
        problems = []
        try:
            self.leave_hub()
        except h.HarnessError as e:
            problems.append(str(e))
        for ns in reversed(self.watchdog_netns):
            cp = _ip("netns", "del", ns, check=False)
            if cp.returncode != 0:
                problems.append("ip netns del %s: %s" % (ns, cp.stdout.strip()))
        self.watchdog_netns = []
        h._write_watchdog_state()
        return problems

    def __repr__(self):
        return "Network(%s)" % self.prefix

    # -- a thread inside a namespace

    class _Inside:
        def __init__(self, path):
            self.path = path
            self.home = None

        def __enter__(self):
            self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            _setns(self.path)
            return self

        def __exit__(self, *exc):
            try:
                if _libc.setns(self.home, CLONE_NEWNET) != 0:
                    raise h.HarnessError("setns back: %s" % os.strerror(ctypes.get_errno()))
            finally:
                os.close(self.home)
            return False

    def inside(self, name):
        """Context manager: the calling thread's new sockets are made in
        name's namespace until it exits (only that thread)."""
        return Network._Inside("/run/netns/" + self.ns(name))

    # -- faults

    def cut(self, name):
        """name's link to the bridge down: nothing in or out (its own
        processes still reach each other over lo and v0's address)."""
        _ip("-n", self.ns("hub"), "link", "set", "h-" + name, "down")

    def heal(self, name):
        _ip("-n", self.ns("hub"), "link", "set", "h-" + name, "up")

    def iptables(self, name, *rule):
        """Runs iptables -w RULE... inside name's namespace."""
        return h.run(self.argv(name, ["iptables", "-w"] + [str(r) for r in rule]), timeout_s=20)

    def loss(self, name, probability):
        """Random loss of `probability` on every packet in and out of
        name's link (iptables statistic: this kernel has no netem)."""
        p = "%.3f" % probability
        self.iptables(name, "-A", "INPUT", "-i", "v0", "-m", "statistic", "--mode", "random",
                      "--probability", p, "-j", "DROP")
        self.iptables(name, "-A", "OUTPUT", "-o", "v0", "-m", "statistic", "--mode", "random",
                      "--probability", p, "-j", "DROP")

    def clear_rules(self, name):
        self.iptables(name, "-F")

    def counters(self, name):
        """iptables -L -v -n -x inside name's namespace (for a test's log)."""
        return h.run(self.argv(name, ["iptables", "-w", "-L", "-v", "-n", "-x"]),
                     timeout_s=20).stdout


def run_in(net, name, fn, *args):
    """Runs fn(*args) in a new thread inside name's namespace; returns its
    result (or raises its exception). For a one-off client call."""
    out = {}

    def body():
        try:
            with net.inside(name):
                out["v"] = fn(*args)
        except BaseException as e:  # handed to the caller
            out["e"] = e
    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(60)
    if t.is_alive():
        raise h.HarnessError("call inside %s did not return within 60 s" % name)
    if "e" in out:
        raise out["e"]
    return out.get("v")

