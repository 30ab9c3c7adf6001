"""Run the milter: socket, signals, reload, privilege drop.

libmilter runs in a worker thread; the main thread stays in Python so that it, not
libmilter's own signal thread, receives SIGHUP and SIGTERM (Linux delivers a
process signal to the main thread when it does not block it). SIGHUP reloads the
config (an invalid one is refused and the old one kept); SIGTERM/SIGINT stop
gracefully.
"""

from __future__ import annotations

import grp
import os
import pwd
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import Milter
import milter as libmilter

from postwarden import __version__, dns, hostinfo, sdnotify
from postwarden import config as configmod
from postwarden.checks.periodic import periodic_selfcheck
from postwarden.config import Config, ConfigError
from postwarden.heartbeat import Beat
from postwarden.hoststate import HostState
from postwarden.log import log
from postwarden.metrics import metrics
from postwarden.milter.app import PostwardenMilter, current
from postwarden.milter.pipeline import Inspector, Services, default_checks, default_fixers
from postwarden.milter.storehealth import StoreHealth
from postwarden.store import Store, StoreError, open_store
from postwarden.store.base import MAX_PENDING

NAME = "postwarden"


def build_inspector(cfg: Config, store: Store | None,
                    host: HostState | None = None,
                    health: StoreHealth | None = None) -> Inspector:
    resolver = dns.from_config(cfg.dns)
    facts = hostinfo.fill(cfg.host, resolver, cfg.selfcheck.postfix_config_dir)
    if facts.detected:
        log.info(f"host: ips={','.join(cfg.host.ips) or 'none'} hostname={cfg.host.hostname} "
                 f"domains={','.join(cfg.host.domains) or 'none'} "
                 f"(detected: {','.join(facts.detected)}; set [host] to override)")
    if not cfg.host.ips:
        log.warning("no public sending IP found: SPF cannot be judged; set [host] ips")
    services = Services(config=cfg, resolver=resolver, store=store,
                        host=host if host is not None else HostState(),
                        health=health if health is not None else StoreHealth())
    return Inspector(services, default_checks(services), default_fixers(services))


def _open_store(cfg: Config) -> Store | None:
    try:
        return open_store(cfg.store)
    except (StoreError, OSError, ImportError) as e:
        log.error(f"store {cfg.store.backend} unavailable: {e}; running without state "
                  "(no rate limits, hold reasons not kept) until restart")
        return None


def _prepare_socket(cfg: Config) -> str:
    spec = cfg.socket
    if spec.startswith("unix:"):
        path = Path(spec[5:])
        path.parent.mkdir(parents=True, exist_ok=True)
        os.umask(0o777 & ~int(cfg.socket_mode, 8))
    return spec


def _fix_socket_owner(cfg: Config) -> None:
    if not cfg.socket.startswith("unix:"):
        return
    path = cfg.socket[5:]
    os.chmod(path, int(cfg.socket_mode, 8))
    if os.geteuid() == 0 and cfg.socket_group:
        try:
            gid = grp.getgrnam(cfg.socket_group).gr_gid
        except KeyError:
            log.warning(f"socket_group {cfg.socket_group!r} does not exist; "
                        f"{path} keeps group root and Postfix may not reach it")
            return
        uid = pwd.getpwnam(cfg.user).pw_uid if cfg.user else -1
        os.chown(path, uid, gid)


def _drop_privileges(cfg: Config) -> None:
    if not cfg.user or os.geteuid() != 0:
        return
    pw = pwd.getpwnam(cfg.user)
    os.setgroups([g.gr_gid for g in grp.getgrall() if cfg.user in g.gr_mem])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)


MAX_COMMAND_SIZE = 1024 * 1024


def _raise_max_data_size() -> None:
    """libmilter drops the connection on a command over 64 KB, and Postfix sends a
    header (up to header_size_limit, 100 KB by default) as one command. pymilter does
    not expose smfi_setmaxdatasize, so call it in the already-loaded libmilter."""
    import ctypes
    import ctypes.util

    for name in ("libmilter.so.1.0.1", "libmilter.so.1.0.2", "libmilter.so.1.0",
                 ctypes.util.find_library("milter")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            lib.smfi_setmaxdatasize.argtypes = [ctypes.c_size_t]
            lib.smfi_setmaxdatasize(MAX_COMMAND_SIZE)
            return
        except (OSError, AttributeError):
            continue
    log.warning("cannot raise libmilter's 64 KB command limit: a header over 64 KB "
                "ends that milter session (Postfix then applies default_action)")


def _pin_to_one_cpu() -> int | None:
    """Keep this thread, and every thread started after it, on one CPU.

    Only one thread runs Python at a time; with libmilter's thread per connection
    spread over cores, each hand-over of the GIL is a cross-core wake-up, and under
    10 concurrent sessions that doubled the CPU per message. On one core a hand-over
    is a plain context switch. The highest allowed CPU is taken: CPU 0 tends to get
    more interrupts.
    """
    try:
        allowed = os.sched_getaffinity(0)
        if len(allowed) < 2:
            return None
        cpu = max(allowed)
        os.sched_setaffinity(0, {cpu})
        return cpu
    except (AttributeError, OSError) as e:
        log.warning(f"cannot pin to one CPU ({e}); running unpinned, at a higher CPU "
                    "cost per message (set pin_cpu = false to silence this)")
        return None


def _register() -> None:
    libmilter.set_connect_callback(Milter.connect_callback)
    libmilter.set_helo_callback(lambda ctx, host: ctx.getpriv().hello(host))
    libmilter.set_envfrom_callback(lambda ctx, *b: ctx.getpriv().envfrom_bytes(*b))
    libmilter.set_envrcpt_callback(lambda ctx, *b: ctx.getpriv().envrcpt_bytes(*b))
    libmilter.set_header_callback(lambda ctx, f, v: ctx.getpriv().header_bytes(f, v))
    libmilter.set_eoh_callback(lambda ctx: ctx.getpriv().eoh())
    libmilter.set_body_callback(lambda ctx, chunk: ctx.getpriv().body(chunk))
    libmilter.set_eom_callback(lambda ctx: ctx.getpriv().eom())
    libmilter.set_abort_callback(lambda ctx: ctx.getpriv().abort())
    libmilter.set_close_callback(Milter.close_callback)
    Milter.factory = PostwardenMilter
    libmilter.register(NAME, data=lambda ctx: ctx.getpriv().data(),
                       unknown=lambda ctx, cmd: ctx.getpriv().unknown(cmd),
                       negotiate=Milter.negotiate_callback)


def run(config_path: str | None, log_stderr: bool = False) -> int:
    cfg = configmod.load(config_path)
    if log_stderr:
        cfg.log.target = "stderr"
    log.setup(cfg.log.target, cfg.log.facility, cfg.log.repeat_interval)
    cpu = _pin_to_one_cpu() if cfg.pin_cpu else None  # before any thread starts
    store = _open_store(cfg)
    host = HostState()  # written by the periodic self-check, read by the milter's checks
    health = StoreHealth()  # one across reloads: a store outage is reported once
    current.inspector = build_inspector(cfg, store, host, health)

    libmilter.setconn(_prepare_socket(cfg))
    libmilter.settimeout(600)
    _raise_max_data_size()
    _register()
    libmilter.opensocket(True)
    _fix_socket_owner(cfg)
    _drop_privileges(cfg)

    stop = threading.Event()
    reload_requested = threading.Event()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        reload_requested.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)

    _start_metrics(cfg, stop)
    worker = threading.Thread(target=libmilter.main, name="libmilter", daemon=True)
    worker.start()
    beat = Beat(socket=cfg.socket)
    threading.Thread(target=periodic_selfcheck, args=(_live, host, stop),
                     kwargs={"beat": beat}, name="periodic_selfcheck", daemon=True).start()
    log.info(f"starting postwarden {__version__}: mode={cfg.mode}, socket={cfg.socket}, "
             f"store={cfg.store.backend}, cpu={'any' if cpu is None else cpu}, "
             f"config={cfg.source}")
    # The socket has listened since opensocket(): connections wait in its backlog
    # until libmilter accepts them, so Postfix may be let in now.
    sdnotify.notify(f"READY=1\nSTATUS=listening on {cfg.socket}\nMAINPID={os.getpid()}")
    force = True
    while not stop.is_set() and worker.is_alive():
        stop.wait(0.0 if force else 0.5)
        _heartbeat(beat, store, _flush_events(store, health), force)
        force = False
        if reload_requested.is_set():
            reload_requested.clear()
            _reload(config_path, log_stderr, store, host, health)
    if not worker.is_alive() and not stop.is_set():
        log.error("libmilter stopped unexpectedly; exiting so the service manager restarts us")
        return 75
    sdnotify.notify("STOPPING=1")
    log.info("stopping: finishing open sessions")
    libmilter.stop()
    worker.join(timeout=10)
    _heartbeat(beat, store, True, True, stopped=True)
    if store is not None:
        try:
            store.close()
        except StoreError as e:
            log.warning(f"stopping: activity events since the last write are lost: {e}")
    log.info(f"stopped after {current.messages()} messages")
    return 0


def _start_metrics(cfg: Config, stop: threading.Event) -> None:
    """The opt-in metrics endpoint and textfile ([metrics]); a failure is logged, the
    milter runs on without them."""
    m = cfg.metrics
    if m.listen:
        try:
            metrics.serve(m.listen)
            log.info(f"metrics: serving http://{m.listen}/metrics")
        except OSError as e:
            log.error(f"metrics: cannot listen on {m.listen}: {e}; no metrics endpoint "
                      "(fix [metrics] listen and restart)")
    if m.textfile:
        threading.Thread(target=metrics.textfile_loop, args=(m.textfile, m.textfile_interval,
                                                             stop),
                         name="metrics-textfile", daemon=True).start()


def _heartbeat(beat: Beat, store: Store | None, store_ok: bool, force: bool = False,
               stopped: bool = False) -> None:
    """Tell `selfcheck` and `status` the daemon is alive (every few seconds at most)."""
    if store is None:
        return
    try:
        beat.maybe_write(store, time.time(), store_ok, force, stopped)
    except StoreError:
        pass  # the event flush reports a down store, once


def _flush_events(store: Store | None, health: StoreHealth) -> bool:
    """Write the activity events queued by the last half second's messages."""
    if store is None:
        return False
    try:
        store.flush_events()
    except StoreError as e:
        health.failed(e, "activity recording")  # counted in the store-error metric
        if store.events_dropped:
            log.limited("store.events_dropped", "warning",
                        f"{store.events_dropped} activity events dropped so far while the "
                        f"store is unavailable (the newest {MAX_PENDING} are kept); "
                        "`postwarden status` and the self-check will undercount")
        return False
    health.ok()
    return True


def _live() -> tuple[Config, Store | None]:
    """The periodic self-check's getter: the config and store after any reload."""
    inspector = current.inspector
    if inspector is None:
        raise RuntimeError("no inspector yet")  # run() builds it before the thread
    return inspector.services.config, inspector.services.store


def _reload(config_path: str | None, log_stderr: bool, store: Store | None,
            host: HostState, health: StoreHealth) -> None:
    try:
        new = configmod.load(config_path)
    except ConfigError as e:
        log.error(f"reload refused, keeping the running config: {e}")
        return
    if log_stderr:
        new.log.target = "stderr"
    old = current.inspector
    if old is not None and (new.socket != old.services.config.socket
                            or new.store != old.services.config.store):
        log.warning("reload: socket and store changes take effect only on restart")
        new.socket, new.store = old.services.config.socket, old.services.config.store
    sdnotify.notify("RELOADING=1")
    log.setup(new.log.target, new.log.facility, new.log.repeat_interval)
    current.inspector = build_inspector(new, store, host, health)
    log.info(f"reloaded: mode={new.mode} config={new.source}")
    sdnotify.notify("READY=1")
