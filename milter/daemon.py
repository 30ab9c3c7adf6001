"""Run the milter: socket, signals, reload, privilege drop.

libmilter runs in a worker thread; the main thread stays in Python so that it, not
libmilter's own signal thread, receives SIGHUP and SIGTERM (Linux delivers a
process signal to the main thread when it does not block it). SIGHUP reloads the
config (an invalid one is refused and the old one kept); SIGTERM/SIGINT stop
gracefully.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import pwd
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import Milter
import milter as libmilter

from postwarden import __version__, config_advice, dns, hostinfo, sdnotify
from postwarden import config as configmod
from postwarden.checks.periodic import periodic_selfcheck
from postwarden.config import Config, ConfigError
from postwarden.heartbeat import Beat
from postwarden.hoststate import HostState
from postwarden.log import log
from postwarden.metrics import metrics
from postwarden.milter import clib, feedback_reader, macros
from postwarden.milter.app import PostwardenMilter, current
from postwarden.milter.body import return_memory_to_os
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


def _private_store_files(cfg: Config) -> None:
    """The store holds SASL logins and senders: never readable by other users, whatever
    umask the daemon was started with. SQLite gives its -wal and -shm files the mode
    of the database file, so creating that one 0640 covers all three."""
    if cfg.store.backend != "sqlite":
        return
    db = Path(cfg.store.path)
    try:
        if not db.exists():
            db.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640))
        for f in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            if f.exists() and f.stat().st_mode & 0o007:
                f.chmod(f.stat().st_mode & 0o770)
                log.info(f"store: {f} was readable by every user; now mode "
                         f"{f.stat().st_mode & 0o777:04o}")
    except OSError as e:
        log.warning(f"store: cannot make {db} private ({e}); check its mode")


def _open_store(cfg: Config) -> Store | None:
    _private_store_files(cfg)
    try:
        return open_store(cfg.store)
    except (StoreError, OSError, ImportError) as e:
        log.error(f"store {cfg.store.backend} unavailable: {e}; running without state "
                  "(no rate limits, hold reasons not kept) until restart")
        return None


EXIT_IN_USE = 73  # EX_CANTCREAT: the socket belongs to a running instance


class SocketInUse(Exception):
    pass


def _lock_socket(cfg: Config) -> int | None:
    """Hold an exclusive lock on SOCKET.lock for the daemon's lifetime.

    libmilter removes an existing socket file before it binds, and again on exit:
    a second instance started on the same path would take the socket away from the
    running one and leave Postfix with nothing to talk to. The lock is taken before
    libmilter is asked to open the socket; the file is never removed (an flock dies
    with its process, so a stale file is harmless)."""
    if not cfg.socket.startswith("unix:"):
        return None  # a second bind on the same TCP port fails by itself
    path = cfg.socket[5:] + ".lock"
    parent = Path(path).parent
    if not parent.is_dir():
        parent.mkdir(parents=True)
        parent.chmod(0o755)  # Postfix (another user) must reach the socket inside
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        try:
            other = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        finally:
            os.close(fd)
        raise SocketInUse(f"another postwarden milter (pid {other}) holds {path}: "
                          f"it serves {cfg.socket}; not starting a second one (stop it "
                          "first, or give this one another socket)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


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

    lib = clib.load("smfi_setmaxdatasize")
    if lib is None:
        log.warning("cannot raise libmilter's 64 KB command limit: a header over 64 KB "
                    "ends that milter session (Postfix then applies default_action)")
        return
    lib.smfi_setmaxdatasize.argtypes = [ctypes.c_size_t]
    lib.smfi_setmaxdatasize(MAX_COMMAND_SIZE)


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


def run(config_path: str | None, log_stderr: bool = False,
        pending_reload: threading.Event | None = None) -> int:
    # Signals first: a SIGHUP during start-up (config load, DNS detection) must be
    # a reload once we are up, not the default action (exit). The CLI installs an
    # earlier handler and hands over what it caught (pending_reload).
    stop = threading.Event()
    reload_requested = pending_reload or threading.Event()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        reload_requested.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)

    os.umask(0o027)  # nothing postwarden writes is for other users
    cfg = configmod.load(config_path)
    if log_stderr:
        cfg.log.target = "stderr"
    log.setup(cfg.log.target, cfg.log.facility, cfg.log.repeat_interval)
    try:
        lock = _lock_socket(cfg)
    except SocketInUse as e:
        log.error(f"{e}")
        return EXIT_IN_USE
    except OSError as e:
        log.error(f"cannot lock the socket {cfg.socket}: {e}; not starting")
        return EXIT_IN_USE
    for warning in config_advice.warnings(cfg, hostinfo.interface_ips):
        log.warning(warning)
    _warn_if_inet(cfg)
    _install_callback_error_hook()
    if not return_memory_to_os():
        log.warning("cannot fix malloc's mmap threshold: memory of big messages may stay "
                    "allocated after they are gone")
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
    _warn_if_reload_cannot_read(cfg)

    _start_metrics(cfg, stop)
    worker = threading.Thread(target=libmilter.main, name="libmilter", daemon=True)
    worker.start()
    beat = Beat(socket=cfg.socket)
    threading.Thread(target=_keep_running, args=(periodic_selfcheck, stop),
                     kwargs={"args": (_live, host, stop), "kwargs": {"beat": beat}},
                     name="periodic_selfcheck", daemon=True).start()
    feedback_reader.start(_live, host, stop)  # its own thread; logs which source it reads
    feedback_reader.start_dmarc_watch(_live, stop)  # [feedback] dmarc_maildir, when set
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
    del lock  # held (open) until the process ends, after libmilter removed the socket
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


TASK_RETRY = 60.0


def _keep_running(task: Callable[..., None], stop: threading.Event,
                  args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> None:
    """A background task that raises is logged and started again, never lost silently
    (the periodic self-check is what warns about a new listing)."""
    name = getattr(task, "__name__", "task")
    while not stop.is_set():
        try:
            task(*args, **(kwargs or {}))
            return
        except Exception as e:
            log.error(f"{name} failed: {type(e).__name__}: {e}; "
                      f"starting it again in {TASK_RETRY:.0f} s")
            stop.wait(TASK_RETRY)


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
            host: HostState, health: StoreHealth | None = None) -> None:
    """A reload either takes effect whole or is refused with one error line."""
    try:
        _reload_unguarded(config_path, log_stderr, store, host, health)
    except ConfigError as e:
        log.error(f"reload refused, keeping the running config: {e}")
    except Exception as e:  # a bug must not end the daemon on SIGHUP
        log.error(f"reload refused, keeping the running config: internal error "
                  f"{type(e).__name__}: {e}")


def _reload_unguarded(config_path: str | None, log_stderr: bool, store: Store | None,
                      host: HostState, health: StoreHealth | None) -> None:
    new = configmod.load(config_path)
    if log_stderr:
        new.log.target = "stderr"
    old = current.inspector
    if old is not None and (new.socket != old.services.config.socket
                            or new.store != old.services.config.store):
        log.warning("reload: socket and store changes take effect only on restart")
        new.socket, new.store = old.services.config.socket, old.services.config.store
    inspector = build_inspector(new, store, host, health)
    sdnotify.notify("RELOADING=1")
    log.setup(new.log.target, new.log.facility, new.log.repeat_interval)
    current.inspector = inspector
    log.info(f"reloaded: mode={new.mode} config={new.source}")
    sdnotify.notify("READY=1")


def _warn_if_inet(cfg: Config) -> None:
    current.unix_socket = cfg.socket.startswith("unix:")
    if current.unix_socket:
        return
    log.warning(f"listening on TCP {cfg.socket} (allow_inet = true): every local user can "
                "connect and speak the milter protocol to postwarden, not only Postfix; "
                "use a unix socket unless you must")
    if not macros.available:
        log.error("this libmilter build's macro layout is unknown: macros will not be read "
                  "on the TCP socket (origin by daemon name, SASL login and queue IDs "
                  "unknown); use a unix socket")


def _warn_if_reload_cannot_read(cfg: Config) -> None:
    """After the drop to `user`, SIGHUP re-reads the config and the DKIM keys as that
    user: say now, once, if that cannot work, rather than refuse every reload later."""
    if not cfg.user or not cfg.source:
        return
    needed = [cfg.source] + [k.key_file for k in cfg.dkim.keys]
    unreadable = [p for p in needed if not os.access(p, os.R_OK)]
    if unreadable:
        log.warning(f"after switching to user {cfg.user}, {', '.join(unreadable)} cannot be "
                    "read: SIGHUP reloads will be refused; restart the service to apply "
                    f"config changes, or make those files readable by {cfg.user}'s group")


def _install_callback_error_hook() -> None:
    """pymilter builds each callback's arguments in C; when that fails (a header
    name that is not UTF-8) no Python code of ours runs and pymilter's exception
    policy answers. CONTINUE (not the default TEMPFAIL, which in a no-reply stage
    leaves libmilter out of step so end-of-message is never answered) skips that
    one item; pymilter reports the error through sys.excepthook, which logs it with
    the queue ID and marks the message."""
    libmilter.set_exception_policy(Milter.CONTINUE)
    previous = sys.excepthook

    def hook(tp: type[BaseException], value: BaseException, tb: object) -> None:
        session = PostwardenMilter.in_thread()
        if session is None:
            previous(tp, value, tb)  # type: ignore[arg-type]
            return
        session.callback_failed(f"{tp.__name__}: {value}")

    sys.excepthook = hook
