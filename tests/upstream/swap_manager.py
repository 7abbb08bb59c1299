"""pytest plugin: run nbclient's own suite with `conkernelclient.ConKernelManager` as the default kernel manager.

Load it with `-p swap_manager` (with tests/upstream on PYTHONPATH). `CKC_SWAP=1` swaps; unset (or 0) runs
the baseline, so one command serves both modes. Only the *default* of `NotebookClient.kernel_manager_class`
changes: tests that pass `kernel_manager_class=` or `km=` themselves keep what they pass. No nbclient file
is edited; the swap lives in this process only.

Each test that built a NotebookClient on the swapped default gets the junit property `ckc_swapped`, and the
terminal summary counts them (the other tests never touched ConKernelManager: their result says nothing about it).

Hangs: one second before `--timeout` kills a test, the stacks of every pending asyncio task in the running
loops are taken (pytest-timeout alone shows only the loop's `select`). They are attached to the failure as the
section "asyncio tasks before timeout", and the innermost nbclient frame -> innermost frame of each stuck task
that the test itself started (tasks left pending by earlier hung tests are marked, not counted) becomes the junit
property `ckc_stuck`, which `compare.py` prints. `CKC_TASKDUMP=0` turns this off;
`CKC_TASKDUMP=N` takes the stacks after N seconds instead.

Re-alarm: pytest-timeout's signal method raises `Failed` once, in whatever the main thread runs. When that is an
asyncio callback, the loop logs and swallows it, and a test waiting forever hangs the whole run. So while a test
outlives its timeout by 5 s or more, SIGALRM is sent again every 5 s (only while a handler is
installed: pytest-timeout's or this plugin's), which lands in the loop's `select` sooner or later. Each resend is noted.

Unguarded phases: pytest-timeout arms one timer for setup+call+teardown and cancels it on the first failure
(`pytest_exception_interact`), so teardown after a failure, and every rerun that `@pytest.mark.flaky` makes
inside the same protocol, would run with no timeout at all. When the call or teardown phase starts with no
SIGALRM handler installed, this plugin arms its own (same `--timeout`) for that phase.

Exit: a hung test can leave non-daemon threads (nbclient's test_parallel_notebooks starts two and joins them
for 2 s only); the interpreter would wait for them forever after the run. After `pytest_unconfigure`, if such
threads are still alive 5 s later, the process exits with pytest's status via `os._exit`.
"""
import asyncio, gc, linecache, os, signal, threading, time, weakref
from pathlib import Path
import pytest

SWAP = os.environ.get('CKC_SWAP', '').strip().lower() not in ('', '0', 'false', 'no')
_NAME = 'kernel_manager_class'
_used = {'count': 0}   # default-generator calls during the running test
_swapped_tests = []    # nodeids of tests that used the swapped default

# ---- the swap

def _swapped_default(self):
    "The swapped default of `NotebookClient.kernel_manager_class`."
    from conkernelclient import ConKernelManager
    _used['count'] += 1
    return ConKernelManager

def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)

def swap():
    "Make `ConKernelManager` the default `kernel_manager_class` of `NotebookClient` and its subclasses; return the old default."
    from nbclient.client import NotebookClient
    meth = f'_{_NAME}_default'
    orig = NotebookClient.__dict__[meth]
    # traitlets resolves a default via `cls.__dict__['_<name>_default']` (which subclasses made later also copy),
    # else via `_all_trait_default_generators`, a per-class dict filled when each class was created.
    setattr(NotebookClient, meth, _swapped_default)
    for cls in (NotebookClient, *_subclasses(NotebookClient)):
        gens = cls.__dict__.get('_all_trait_default_generators', {})
        if gens.get(_NAME) is orig: gens[_NAME] = _swapped_default
    return orig

def pytest_configure(config):
    if SWAP: swap()

def pytest_report_header(config):
    import hashlib, nbclient, jupyter_client, conkernelclient
    core = os.path.join(os.path.dirname(conkernelclient.__file__), 'core.py')
    digest = hashlib.md5(Path(core).read_bytes()).hexdigest()[:12] if os.path.exists(core) else '?'
    mode = 'SWAPPED: NotebookClient.kernel_manager_class defaults to conkernelclient.ConKernelManager' if SWAP \
        else 'BASELINE: NotebookClient.kernel_manager_class keeps its default (set CKC_SWAP=1 to swap)'
    return [f'swap_manager: {mode}',
            f'swap_manager: nbclient {nbclient.__version__} from {os.path.dirname(nbclient.__file__)}; '
            f'jupyter_client {jupyter_client.__version__}',
            f'swap_manager: conkernelclient {conkernelclient.__version__} from '
            f'{os.path.dirname(conkernelclient.__file__)} (core.py md5 {digest})']

# ---- where a hung test is stuck

def _coro_frames(c):
    "Frames of a suspended coroutine and of everything it awaits, outermost first (Python 3.11 shows only the first)."
    while c is not None:
        f = getattr(c, 'cr_frame', None) or getattr(c, 'gi_frame', None) or getattr(c, 'ag_frame', None)
        if f is None: return
        yield f
        c = getattr(c, 'cr_await', None) or getattr(c, 'gi_yieldfrom', None) or getattr(c, 'ag_await', None)

def _where(f) -> str:
    parts = f.f_code.co_filename.split(os.sep)
    return f'{"/".join(parts[-2:])}:{f.f_lineno} {f.f_code.co_name}'

def _loops(running_only:bool):
    return [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop)
            and (o.is_running() if running_only else not o.is_closed())]

def _pending_tasks(loop):
    try: return list(asyncio.all_tasks(loop))
    except RuntimeError: return []  # the set changed under us

def _old_tasks():
    "The tasks pending before a test's call: left over from earlier (hung) tests, since run_sync reuses its loop."
    return weakref.WeakSet(t for loop in _loops(False) for t in _pending_tasks(loop))

def _dump_tasks(old=()):
    "(text, stuck): stacks of all pending tasks in every running loop, read from another thread (diagnostics only)."
    out, stuck = [], []
    for loop in _loops(True):
        tasks = _pending_tasks(loop)
        out.append(f'== {loop!r}: {len(tasks)} pending tasks')
        for t in tasks:
            try:
                frames = list(_coro_frames(t.get_coro()))
                left = t in old
                out.append(repr(t) + ('  [left over from an earlier test]' if left else ''))
                for f in frames:
                    co = f.f_code
                    out.append(f'  File "{co.co_filename}", line {f.f_lineno}, in {co.co_name}')
                    src = linecache.getline(co.co_filename, f.f_lineno).strip()
                    if src: out.append(f'    {src}')
                nb = [f for f in frames if f'{os.sep}nbclient{os.sep}' in f.f_code.co_filename]
                if nb and not left: stuck.append(f'{_where(nb[-1])} -> {_where(frames[-1])}')
            except Exception as e: out.append(f'{t!r}: {e!r}')
    return '\n'.join(out or ['no running asyncio loop'])+'\n', stuck

def _dump_after(item):
    "Seconds into the call phase at which to take task stacks, or None."
    env = os.environ.get('CKC_TASKDUMP', '').strip()
    if env: return float(env) or None
    timeout = _timeout(item)
    return max(timeout-1, 0.5) if timeout else None

def _timeout(item):
    mark = item.get_closest_marker('timeout')
    t = mark.args[0] if mark and mark.args else item.config.getoption('timeout', None)
    if t is None:
        try: t = item.config.getini('timeout')
        except ValueError: t = None
    try: return float(t) or None
    except (TypeError, ValueError): return None

def _realarm(item, deadline:float, done:threading.Event, every:float=5):
    "While the test runs past `deadline`+`every`, resend SIGALRM to the main thread every `every` seconds."
    main = threading.main_thread().ident
    while not done.wait(max(deadline+every-time.monotonic(), every)):
        h = signal.getsignal(signal.SIGALRM)
        if h in (signal.SIG_DFL, signal.SIG_IGN, None) or not callable(h): continue  # would kill us: not ours to send
        item._ckc_realarms = getattr(item, '_ckc_realarms', 0)+1
        signal.pthread_kill(main, signal.SIGALRM)

def _arm(item, phase:str):
    "Arm a SIGALRM timeout for `phase` when none is armed (see 'Unguarded phases'); return the disarm, or None."
    timeout = _timeout(item)
    if not timeout or not hasattr(signal, 'setitimer') or threading.current_thread() is not threading.main_thread(): return
    if item.config.getoption('timeout_method', None) == 'thread': return
    if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, signal.SIG_IGN, None): return
    def handler(signum, frame):
        __tracebackhide__ = True
        pytest.fail(f'Timeout (>{timeout}s) from swap_manager ({phase} phase: pytest-timeout had disarmed)')
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    def disarm():
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    return disarm

@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    disarm = _arm(item, 'teardown')
    try: return (yield)
    finally:
        if disarm: disarm()

@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    disarm = _arm(item, 'call')
    try: return (yield from _call(item))
    finally:
        if disarm: disarm()

def _call(item):
    after, timeout = _dump_after(item), _timeout(item)
    done, timers = threading.Event(), []
    if after:
        old = _old_tasks()
        timers.append(threading.Timer(after, lambda: setattr(item, '_ckc_taskdump', _dump_tasks(old))))
    if timeout and hasattr(signal, 'pthread_kill') and item.config.getoption('timeout_method', None) != 'thread':
        timers.append(threading.Thread(target=_realarm, args=(item, time.monotonic()+timeout, done)))
    for t in timers:
        t.daemon = True
        t.start()
    try: return (yield)
    finally:
        done.set()
        for t in timers:
            if isinstance(t, threading.Timer): t.cancel()

# ---- reporting

@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _used['count'] = 0
    return (yield)

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    dump = getattr(item, '_ckc_taskdump', None) if call.when == 'call' else None
    if dump:
        item._ckc_taskdump = None
        for s in dump[1]: item.user_properties.append(('ckc_stuck', s))  # junit reads them from the teardown report
    if call.when == 'teardown' and _used['count']:
        _swapped_tests.append(item.nodeid)
        item.user_properties.append(('ckc_swapped', _used['count']))
    realarms = getattr(item, '_ckc_realarms', 0) if call.when == 'call' else 0
    if realarms: item.user_properties.append(('ckc_realarms', realarms))
    rep = yield
    if dump: rep.sections.append(('asyncio tasks before timeout', dump[0]))
    if realarms: rep.sections.append(('swap_manager', f'the first timeout was swallowed: SIGALRM resent {realarms} times'))
    return rep

def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not SWAP: return
    tr = terminalreporter
    tr.section('swap_manager')
    tr.write_line(f'{len(set(_swapped_tests))} tests built a NotebookClient on the swapped default (ConKernelManager); '
                  'the others never used it.')

_status = {}

def pytest_sessionfinish(session, exitstatus):
    _status['exit'] = int(exitstatus)

@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    "Leave even when hung tests left non-daemon threads behind (see 'Exit')."
    def stragglers(): return [t for t in threading.enumerate() if t.is_alive() and not t.daemon and t is not threading.main_thread()]
    if 'exit' not in _status or not stragglers(): return
    deadline = time.monotonic()+5
    while stragglers() and time.monotonic() < deadline: time.sleep(0.1)
    left = stragglers()
    if left:
        import sys
        print(f'swap_manager: exiting past {len(left)} hung non-daemon threads: {", ".join(t.name for t in left)}',
              file=sys.stderr)
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(_status['exit'])
