"The blocking facade: one client shared by many threads, each call getting its own result, against real kernels and a real server."
import asyncio, contextvars, gc, json, os, signal, subprocess, sys, textwrap, threading, time, urllib.request, weakref
from concurrent.futures import ThreadPoolExecutor
import pytest
from pathlib import Path
from jupyter_client.session import Session
from traitlets.config import Config
from conkernelclient import ClientClosedError, DeadKernelError, KernelRestartedError
from conkernelclient.blocking import ConBlockingKernelClient, ConBlockingKernelManager, _in_thread
from conkernelclient.remote import RemoteKernelManager
from conkernelclient.tinykernel import tiny_manager
from conftest import pending, settled
from servers import jupyter_server, stop

pytestmark = pytest.mark.timeout(180)

def manager(**kw): return ConBlockingKernelManager(session=Session(key=b'threads'), **kw)
def tiny(): return ConBlockingKernelManager(tiny_manager(session=Session(key=b'threads')))

def new_threads(before:set):
    "This library's threads (loop, callback and closing threads) started since `before` and still alive."
    return [t for t in threading.enumerate() if t not in before and t.name.startswith('conkernelclient')]

def wait_until(cond, timeout:float=30):
    "Whether `cond()` holds within `timeout` seconds: a bound on a hang, polled; not a claim about speed."
    deadline = time.monotonic()+timeout
    while not cond():
        if time.monotonic() > deadline: return False
        time.sleep(0.05)
    return True

def gone(pid:int):
    "Whether process `pid` has exited (a zombie waiting to be reaped has)."
    try: return open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[0]=='Z'
    except FileNotFoundError: return True

def kill(pids):
    "Clean up after a failed test: SIGKILL whichever of `pids` still runs (a tiny kernel has no parent poller to end it)."
    for pid in pids:
        if not gone(pid): os.kill(pid, signal.SIGKILL)

def kernel_pid(kc):
    r = kc.execute('', user_expressions=dict(pid='__import__("os").getpid()'), reply=True, timeout=10)
    return int(r['content']['user_expressions']['pid']['data']['text/plain'])

def run_script(tmp_path, src:str, *args, timeout:float=120):
    "Run `src` in a fresh interpreter, bounded: its completed process (`returncode` None, and what it printed, if it hung)."
    script = tmp_path/'script.py'
    script.write_text(textwrap.dedent(src))
    try: return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    except subprocess.TimeoutExpired as e:
        text = lambda b: b.decode(errors='replace') if isinstance(b, bytes) else b or ''
        return subprocess.CompletedProcess(e.cmd, None, text(e.stdout), text(e.stderr)+f'\n(killed after {timeout} s)')

def mixed_calls(kc, t:int, n:int):
    "`n` mixed calls from thread `t`, each checked to be its own."
    for i in range(n):
        tag, kind = f't{t}_{i}', i % 4
        if kind==0:
            r = kc.execute(f'{tag} = {i}\nprint("{tag}")', outputs=True, timeout=60)
            assert [o.text for o in r.outputs] == [f'{tag}\n'], r.outputs
        elif kind==1:
            r = kc.complete(f't{t}_{i-1}'[:-1], reply=True, timeout=60)  # the name defined just before, by this thread
            assert f't{t}_{i-1}' in r['content']['matches'] and r['content']['cursor_end'] == len(f't{t}_{i-1}')-1
        elif kind==2:
            r = kc.inspect(f't{t}_{i-2}', reply=True, timeout=60)
            assert r['content']['found'] and str(i-2) in r['content']['data']['text/plain']
        else:
            r = kc.execute(f'v = input("{tag}")\nprint(v)', on_input=lambda prompt, pw: prompt.upper(), outputs=True, timeout=60)
            assert [o.text for o in r.outputs] == [f'{tag.upper()}\n'], r.outputs
    return n

def test_16_threads_50_mixed_calls_each_get_their_own_result():
    before = set(threading.enumerate())
    with manager() as km:
        km.start_kernel()
        kc = km.client()
        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as ex:
            futs = [ex.submit(mixed_calls, kc, t, 50) for t in range(16)]
            assert sum(f.result(timeout=150) for f in futs) == 800
        print(f'\n16 threads x 50 mixed calls on one client: 800/800 own results in {time.monotonic()-t0:.1f} s')
        assert settled(kc.aclient)
    assert wait_until(lambda: not new_threads(before), 10), new_threads(before)

SHARED = '''
    import json, sys
    from concurrent.futures import ThreadPoolExecutor
    from jupyter_client import BlockingKernelClient
    from jupyter_client.session import Session
    from conkernelclient.blocking import ConBlockingKernelManager
    from conkernelclient.tinykernel import tiny_manager
    THREADS, CALLS, TIMEOUT = 8, 10, float(sys.argv[1])

    def calls(kc, t:int):
        "CALLS executes from thread `t`: how many got their reply, how many got none within TIMEOUT (or failed otherwise: a socket shared by threads corrupts messages)."
        got = lost = 0
        for i in range(CALLS):
            try: kc.execute(f'# {t} {i}', reply=True, timeout=TIMEOUT); got += 1
            except Exception: lost += 1
        return got, lost

    def shared(kc):
        "Every thread's calls on the one client `kc`, at once."
        with ThreadPoolExecutor(THREADS) as ex: res = list(ex.map(calls, [kc]*THREADS, range(THREADS)))
        return dict(got=sum(g for g, _ in res), lost=sum(l for _, l in res))

    with ConBlockingKernelManager(tiny_manager(session=Session(key=b'x'))) as km:
        km.start_kernel()
        kc = km.client()
        kc.execute('', reply=True, timeout=60)  # the kernel is up: jupyter_client's wait_for_ready gives up if no heartbeat came within a second
        if sys.argv[2] == 'ours': res = shared(kc)
        else:
            info = km.akm.get_connection_info(session=True)
            for k in ('curve_publickey', 'curve_secretkey'):
                if isinstance(info.get(k), str): info[k] = info[k].encode()
            vc = BlockingKernelClient(**info); vc.start_channels(); vc.wait_for_ready(timeout=60)
            res = shared(vc)
            vc.stop_channels()
    print(json.dumps(res), flush=True)
'''

def test_a_shared_blocking_kernel_client_loses_replies_and_ours_does_not(tmp_path):
    "jupyter_client #429/#436, which the README's threads section cites: each caller of `BlockingKernelClient` reads the shell socket and drops the replies not its own, so threads sharing one steal each other's replies."
    # in a process of its own: `BlockingKernelClient` shared by threads uses one zmq socket from several, which libzmq does not allow
    timeout = 2  # seconds a call waits for its reply: the tiny kernel answers in milliseconds, so a reply not there by then was taken
    ours = run_script(tmp_path, SHARED, str(timeout), 'ours', timeout=120)
    assert ours.returncode == 0, ours.stderr[-2000:]
    ours = json.loads(ours.stdout.splitlines()[-1])
    # theirs, in a process of its own: a zmq socket used from several threads at once can also corrupt frames, crash libzmq or block a
    # receive past its timeout; any of those, like a lost reply, is the shared client failing
    p = run_script(tmp_path, SHARED, str(timeout), 'theirs', timeout=60)
    theirs = json.loads(p.stdout.splitlines()[-1]) if p.returncode == 0 else 'hung' if p.returncode is None else f'crashed ({p.returncode})'
    print(f'\n8 threads x 10 executes on one shared client: ours {ours}, BlockingKernelClient {theirs}')
    assert ours == dict(got=80, lost=0)
    assert not isinstance(theirs, dict) or (theirs['lost'] > 0 and theirs['got']+theirs['lost'] == 80)

def test_jupyter_client_429_long_execute_interactive_and_completes_meanwhile():
    with manager() as km:
        km.start_kernel()
        kc = km.client()
        seen = []
        with ThreadPoolExecutor(2) as ex:
            long = ex.submit(kc.execute_interactive, 'import time\nfor i in range(10): print(i, flush=True); time.sleep(0.1)',
                             output_hook=seen.append, timeout=60)
            assert wait_until(lambda: any(m['msg_type']=='stream' for m in seen), 30)  # the long cell runs
            # the kernel answers the completes once the cell is done (its shell runs one request at a time); none is lost or hangs
            for _ in range(5): assert 'import' in kc.complete('impo', reply=True, timeout=30)['content']['matches']
            assert long.result(timeout=60)['content']['status'] == 'ok'
        assert ''.join(m['content']['text'] for m in seen if m['msg_type']=='stream') == ''.join(f'{i}\n' for i in range(10))

WATCH = 0.3  # the async client's `watch_interval` in the next test: how often it checks that the kernel lives

@pytest.mark.parametrize('event', ['sigkill', 'restart', 'close'])
def test_threads_blocked_in_calls_get_the_named_error_within_the_watch_interval(event):
    km = manager(config=Config(ConKernelClient=dict(watch_interval=WATCH)))
    try:
        km.start_kernel()
        kc = km.client()
        assert kc.aclient.watch_interval == WATCH
        pid = kernel_pid(kc)
        def blocked(msg_id):
            "A call that runs for a minute unless told otherwise: its error, and when it came."
            try: kc.execute('import time; time.sleep(60)', msg_id=msg_id, reply=True, timeout=120)
            except Exception as e: return e, time.monotonic()
        mids = [f'blocked-{i}' for i in range(4)]
        with ThreadPoolExecutor(4) as ex:
            futs = [ex.submit(blocked, mid) for mid in mids]
            assert wait_until(lambda: all(pending(kc.aclient, mid) for mid in mids), 30)
            t0 = time.monotonic()
            if event=='sigkill': os.kill(pid, signal.SIGKILL)
            elif event=='restart': km.restart_kernel(now=True)
            else: kc.close()
            res = [f.result(timeout=30) for f in futs]
        want = dict(sigkill=DeadKernelError, restart=KernelRestartedError, close=ClientClosedError)[event]
        assert all(isinstance(e, want) for e, _ in res), res
        # death is noticed at the next liveness check; a restart or a close fails the requests before anything else
        late = max(t for _, t in res)-t0
        print(f'\n{event}: the last blocked thread heard after {late:.2f} s (watch_interval {WATCH} s)')
        assert late < 3*WATCH
        if event=='restart': assert kc.execute('1', reply=True, timeout=30)['content']['status'] == 'ok'
    finally: km.close()

def test_close_leaves_no_threads_fds_or_loops():
    with manager() as km:  # warm up: imports, the first kernel
        km.start_kernel(); km.client().execute('1', reply=True, timeout=30)
    gc.collect()
    threads, fds = set(threading.enumerate()), set(os.listdir('/proc/self/fd'))
    for _ in range(3):
        with manager() as km:
            km.start_kernel()
            kcs = [km.client() for _ in range(3)]
            for kc in kcs: kc.execute('1', reply=True, timeout=30)
            loop = km._lt.loop
        assert loop.is_closed()
    del km, kcs, kc
    gc.collect()
    assert wait_until(lambda: not new_threads(threads), 10), new_threads(threads)
    def opened(): return {fd: os.readlink(f'/proc/self/fd/{fd}') for fd in set(os.listdir('/proc/self/fd'))-fds if os.path.exists(f'/proc/self/fd/{fd}')}
    assert wait_until(lambda: not opened(), 10), opened()  # every descriptor these 3 managers and 9 clients opened is closed

def test_calls_from_inside_a_callback_and_from_a_running_event_loop():
    with manager() as km:
        km.start_kernel()
        kc = km.client()
        # a coroutine callback runs on the loop, where a blocking call would wait for itself
        async def on_input(prompt, pw): return kc.complete('x', reply=True, timeout=5)
        with pytest.raises(RuntimeError, match="own loop thread.*kc.aclient"): kc.execute('input()', on_input=on_input, reply=True, timeout=30)
        async def from_async(): return kc.execute('2+2', reply=True, timeout=10)  # blocks this loop, but its own loop runs
        assert asyncio.run(from_async())['content']['status'] == 'ok'
        msgs = list(kc.stream('print("streamed")', timeout=30))
        assert ''.join(m['content']['text'] for m in msgs if m['msg_type']=='stream') == 'streamed\n'
        with kc.subshells(2) as pool:
            t0 = time.monotonic()
            res = pool.map(['import time; time.sleep(1)']*2, timeout=30)
            assert all(r.status=='ok' for r in res) and time.monotonic()-t0 < 1.9

def test_plain_callbacks_never_run_on_the_loop_thread():
    "`on_input` runs on a thread of its own whichever method takes it, `output_hook` in the caller's (`stream`'s `on_input` used to run on the loop, stalling every other thread's calls)."
    with manager() as km:
        km.start_kernel()
        kc = km.client()
        loop_thread, seen = km._lt.thread, {}
        other_done = threading.Event()
        def on_input(prompt, pw):
            seen[prompt] = threading.current_thread()
            # another thread's call completes while this callback waits (bounded: a stalled loop shows as False)
            waited = other_done.wait(30)
            # the callback uses the client (on control: the kernel's shell waits in this very input())
            return f'{waited} {kc.control_request("kernel_info_request", timeout=10)["content"]["status"]}'
        def output_hook(msg):
            seen.setdefault('output_hook', threading.current_thread())
            kc.kernel_info(reply=True, timeout=10)  # a hook may call the client too
        for name, run in [('stream', lambda: list(kc.stream('print(input("stream"))', on_input=on_input, timeout=60))),
                          ('execute', lambda: kc.execute('print(input("execute"))', on_input=on_input, outputs=True, timeout=60)),
                          ('interactive', lambda: kc.execute_interactive('print(input("interactive"))', on_input=on_input,
                                                                         output_hook=output_hook, timeout=60))]:
            other_done.clear()
            with ThreadPoolExecutor(1) as ex:
                res = ex.submit(run)
                assert wait_until(lambda: name in seen, 30), f'{name}: on_input was not called'
                t0 = time.monotonic()
                kc.control_request('kernel_info_request', timeout=30)  # a round trip through the loop meanwhile
                print(f'\n{name}: another call while on_input waited took {time.monotonic()-t0:.3f} s')
                other_done.set()
                out = res.result(timeout=60)
            text = (''.join(m['content']['text'] for m in out if m['msg_type']=='stream') if name=='stream' else
                    out.outputs[0].text if name=='execute' else None)
            if text is not None: assert text == 'True ok\n', (name, text)
            assert seen[name] is not loop_thread, name
        assert seen['output_hook'] is not loop_thread
        assert settled(kc.aclient)

def test_a_stdin_hook_answers_from_a_thread_in_its_requests_context():
    "A `jupyter_client`-style `stdin_hook` answers with `kc.input(text)` from a thread of its own; the async client tells which request that answers by a context variable, so the thread runs in a copy of the request's context."
    var = contextvars.ContextVar('var')
    async def asking(): var.set('this request'); return await _in_thread(var.get)
    assert asyncio.run(asyncio.wait_for(asking(), 30)) == 'this request'
    # (a kernel that asks two inputs at once would show it end to end; ipykernel's threads share one stdin socket, so it cannot)
    with manager() as km:
        km.start_kernel()
        kc = km.client()
        out = []
        kc.execute_interactive('print(input("mine"))', allow_stdin=True, stdin_hook=lambda msg: kc.input(msg['content']['prompt'].upper()),
                               output_hook=out.append, timeout=60)
        assert [m['content']['text'] for m in out if m['msg_type']=='stream'] == ['MINE\n']

def test_a_dropped_manager_is_closed():
    "A manager nobody references any more stops its loop thread, its clients and the kernel it started (it used to leak all three)."
    before, pids = set(threading.enumerate()), []
    def use_and_drop():
        km = tiny()
        km.start_kernel()
        pids.append(km.akm.provisioner.pid)
        assert km.client().execute('', reply=True, timeout=30)['content']['status'] == 'ok'
    try:
        for _ in range(3): use_and_drop()
        assert wait_until(lambda: all(gone(p) for p in pids), 60), [p for p in pids if not gone(p)]
        assert wait_until(lambda: not new_threads(before), 30), new_threads(before)
    finally: kill(pids)

def test_a_manager_dropped_on_its_own_loop_thread_is_closed():
    "A finaliser runs on whichever thread drops the last reference, the loop's own included: it hands the close to another thread."
    before, pids = set(threading.enumerate()), []
    try:
        km = tiny()
        km.start_kernel()
        pids.append(km.akm.provisioner.pid)
        km.client().execute('', reply=True, timeout=30)
        holder, loop = [km], km._lt.loop
        del km
        loop.call_soon_threadsafe(holder.clear)  # the last reference goes on the loop thread
        assert wait_until(lambda: gone(pids[0]), 60)
        assert wait_until(lambda: not new_threads(before), 30), new_threads(before)
    finally: kill(pids)

def test_a_held_client_keeps_its_manager_alive():
    before, pids = set(threading.enumerate()), []
    def client_only():
        km = tiny()
        km.start_kernel()
        pids.append(km.akm.provisioner.pid)
        return km.client()
    try:
        kc = client_only()
        gc.collect()
        assert kc.execute('', reply=True, timeout=30)['content']['status'] == 'ok' and not gone(pids[0])
        del kc
        assert wait_until(lambda: gone(pids[0]), 60)
        assert wait_until(lambda: not new_threads(before), 30), new_threads(before)
    finally: kill(pids)

def test_a_dropped_remote_manager_deletes_its_kernel(tmp_path):
    proc, url, token = jupyter_server(tmp_path)
    def kernels():
        req = urllib.request.Request(url+'/api/kernels', headers={'Authorization': f'token {token}'})
        with urllib.request.urlopen(req, timeout=10) as r: return {k['id']: k['connections'] for k in json.load(r)}
    try:
        before, ids = set(threading.enumerate()), []
        def use_and_drop():
            km = ConBlockingKernelManager(RemoteKernelManager(url, token=token))
            km.start_kernel()
            ids.append(km.akm.kernel_id)
            kc = km.client()
            kc.execute('1', reply=True, timeout=60)
            assert kernels()[km.akm.kernel_id] == 1  # the client's websocket (both are dropped when this returns)
        for _ in range(3): use_and_drop()
        assert wait_until(lambda: not set(ids) & kernels().keys(), 60), kernels()
        assert wait_until(lambda: not new_threads(before), 30), new_threads(before)
    finally: stop(proc)

FORK = '''
    import multiprocessing, os, signal, subprocess, sys, time
    from jupyter_client.session import Session
    from conkernelclient.blocking import ConBlockingKernelManager, ForkedClientError
    from conkernelclient.tinykernel import tiny_manager
    km = ConBlockingKernelManager(tiny_manager(session=Session(key=b"x")))
    km.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); kc = km.client()  # the kernel keeps no pipe of ours open
    print("kernel", km.akm.provisioner.pid, flush=True)
    conn = km.akm.connection_file

    def in_child():
        "What every use of the parent's manager and client does in a forked child; how long all of it took."
        t0, said = time.monotonic(), []
        for f in (lambda: kc.execute("", reply=True, timeout=1), lambda: km.is_alive(), lambda: next(kc.stream("")), kc.close, km.close):
            try: f(); said.append("no error")
            except ForkedClientError as e: said.append("ForkedClientError" if "another process" in str(e) else repr(e))
            except Exception as e: said.append(repr(e))
        return "|".join(sorted(set(said))), round(time.monotonic()-t0, 2)

    def check_parent(how):
        ok = kc.execute("", reply=True, timeout=30)["content"]["status"]
        print(how, "parent", ok, km.is_alive(), os.path.exists(conn), flush=True)

    pid = os.fork()
    if pid == 0:
        print("fork child", *in_child(), flush=True)
        sys.exit(0)  # a normal exit: exit hooks and finalisers run
    deadline = time.monotonic()+30
    while (res := os.waitpid(pid, os.WNOHANG))[0]==0 and time.monotonic() < deadline: time.sleep(0.05)
    if res[0]==0: os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0); print("fork child hung", flush=True)
    else: print("fork exit", os.waitstatus_to_exitcode(res[1]), flush=True)
    check_parent("fork")

    def mp_child(q): q.put(in_child())
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=mp_child, args=(q,))
    p.start(); p.join(30)
    if p.exitcode is None: p.kill(); p.join(); print("mp child hung", flush=True)
    else: print("mp child", *q.get(timeout=5), flush=True); print("mp exit", p.exitcode, flush=True)
    check_parent("mp")
    km.close()
    print("closed", flush=True)
'''

def test_a_forked_child_gets_a_named_error_and_leaves_the_parents_kernel_alone(tmp_path):
    "In a forked child the parent's loop thread does not exist: calls used to hang whatever their timeout, and so did exit."
    p = run_script(tmp_path, FORK, timeout=150)
    lines = p.stdout.splitlines()
    pid = int(lines[0].split()[1]) if lines and lines[0].startswith('kernel') else None
    try:
        assert p.returncode == 0, p.stdout+p.stderr[-2000:]
        assert 'Traceback' not in p.stderr and 'Exception ignored' not in p.stderr, p.stderr[-2000:]  # the child's exit hooks kept quiet
        out = {' '.join(l.split()[:2]): l.split(None, 2)[2] for l in lines[1:] if len(l.split()) > 2}
        for how in ('fork', 'mp'):
            said, took = (out[f'{how} child'].split() + ['', ''])[:2]
            assert said == 'ForkedClientError', (how, out)
            assert float(took) < 1, (how, took)  # at once: sooner than the call's own timeout, which a wait on the missing loop would pass
            assert out[f'{how} exit'] == '0', (how, out)
            assert out[f'{how} parent'] == 'ok True True', (how, out)  # the parent's kernel, connection file and client are untouched
        assert lines[-1] == 'closed' and wait_until(lambda: gone(pid), 30)
    finally:
        if pid: kill([pid])

REFUSED = '''
    import asyncio, os, subprocess, sys
    from jupyter_client.session import Session
    from conkernelclient.blocking import ConBlockingKernelManager
    from conkernelclient.tinykernel import tiny_manager
    km = ConBlockingKernelManager(tiny_manager(session=Session(key=b"x")))
    km.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); kc = km.client()  # the kernel keeps no pipe of ours open: a kernel left alive shows as such
    print("kernel", km.akm.provisioner.pid, flush=True)
    refused = []
    async def on_input(prompt, pw):  # runs on the loop thread, where closing would wait for itself
        for f in (kc.close, km.close):
            try: f()
            except RuntimeError as e: refused.append("own loop thread" in str(e) or "another thread" in str(e))
        return "x"
    kc.execute("%input", on_input=on_input, reply=True, timeout=30)
    print("refused", refused, kc.execute("", reply=True, timeout=30)["content"]["status"], km.is_alive(), flush=True)

    lone = ConBlockingKernelManager(tiny_manager(session=Session(key=b"x")))  # a manager without clients
    lone.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print("kernel", lone.akm.provisioner.pid, flush=True)
    async def close_inside():
        try: lone.close()
        except RuntimeError as e: return "refused"
    print("lone", asyncio.run_coroutine_threadsafe(close_inside(), lone._lt.loop).result(30), lone.is_alive(),
          lone.client().execute("", reply=True, timeout=30)["content"]["status"], flush=True)
    # exit without closing either: the exit hooks still shut both kernels down
'''

def test_a_refused_close_changes_nothing(tmp_path):
    "A close refused inside a callback used to unregister the exit hook first (and, without clients, leave the manager marked closed)."
    p = run_script(tmp_path, REFUSED)
    lines = p.stdout.splitlines()
    pids = [int(l.split()[1]) for l in lines if l.startswith('kernel')]
    try:
        assert p.returncode == 0, p.stdout+p.stderr[-2000:]
        assert [l for l in lines if not l.startswith('kernel')] == ['refused [True, True] ok True', 'lone refused True ok'], p.stdout
        assert len(pids) == 2 and wait_until(lambda: all(gone(pid) for pid in pids), 30)  # only the exit hooks end a tiny kernel
    finally: kill(pids)

def test_closed_and_dropped_clients_are_not_kept():
    "The manager used to keep every client it made; a closed or dropped client is freed, an open one still closed with the manager."
    before = set(threading.enumerate())
    with tiny() as km:
        km.start_kernel()
        refs = []
        for _ in range(20):  # closed
            kc = km.client()
            kc.execute('', reply=True, timeout=30)
            kc.close()
            refs += [weakref.ref(kc), weakref.ref(kc.aclient)]
        for _ in range(5):  # dropped without close: their finalisers stop their async clients
            kc = km.client()
            refs += [weakref.ref(kc), weakref.ref(kc.aclient)]
        del kc
        assert wait_until(lambda: gc.collect() is not None and not any(r() for r in refs), 30), sum(r() is not None for r in refs)
        kept = [km.client() for _ in range(2)]
        with ThreadPoolExecutor(2) as ex:
            futs = [ex.submit(kc.execute, '%sleep 60', msg_id=f'kept-{i}', reply=True, timeout=120) for i, kc in enumerate(kept)]
            assert wait_until(lambda: all(pending(kc.aclient, f'kept-{i}') for i, kc in enumerate(kept)), 30)
            km.close()  # closing the manager still stops the clients it made that are open
            assert all(isinstance(f.exception(timeout=30), ClientClosedError) for f in futs)
    assert not any(kc.aclient.channels_running for kc in kept)  # stopped, their sockets closed: not just cut off with their loop
    with pytest.raises(ClientClosedError): kept[1].kernel_info(reply=True, timeout=5)
    assert wait_until(lambda: not new_threads(before), 30), new_threads(before)

EXIT = '''
    import subprocess, sys, threading, time
    sys.path.insert(0, sys.argv[1])
    from conftest import pending
    from jupyter_client.session import Session
    from conkernelclient.blocking import ConBlockingKernelManager
    km = ConBlockingKernelManager(session=Session(key=b"x"))
    km.start_kernel(independent=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # no parent poller: only our exit hook can end it
    kc = km.client()
    print("kernel", kc.execute("", user_expressions=dict(p="__import__('os').getpid()"), reply=True, timeout=30)["content"]["user_expressions"]["p"]["data"]["text/plain"], flush=True)
    asked = threading.Event()  # a callback waiting for a user who never answers
    threading.Thread(target=kc.execute, args=("input()",), kwargs=dict(on_input=lambda p, pw: asked.set() or threading.Event().wait(), reply=True), daemon=True).start()
    print("asked", asked.wait(30), flush=True)
    threading.Thread(target=kc.execute, args=("import time; time.sleep(60)",), kwargs=dict(msg_id="queued", reply=True), daemon=True).start()
    deadline = time.monotonic()+30  # a thread blocked in a call queued behind it
    while not pending(kc.aclient, "queued") and time.monotonic() < deadline: time.sleep(0.01)
    print("queued", pending(kc.aclient, "queued"), flush=True)
'''

def test_interpreter_exit_with_an_open_client_does_not_hang(tmp_path):
    p = run_script(tmp_path, EXIT, str(Path(__file__).parent), timeout=90)  # the bound on a hang
    pid = next((int(l.split()[1]) for l in p.stdout.splitlines() if l.startswith('kernel ')), None)
    try:
        assert p.returncode == 0, p.stdout+p.stderr
        assert p.stdout.splitlines()[1:] == ['asked True', 'queued True'], p.stdout
        assert wait_until(lambda: gone(pid), 10), 'the kernel outlived the interpreter that started it'
    finally:
        if pid: kill([pid])

def test_blocking_client_attached_by_connection_file_owns_its_loop():
    with manager() as km:
        km.start_kernel()
        before = set(threading.enumerate())
        with ConBlockingKernelClient.from_connection_file(km.akm.connection_file) as kc:
            assert len(new_threads(before)) == 1
            assert kc.execute('print("attached")', outputs=True, timeout=30).outputs[0].text == 'attached\n'
        assert wait_until(lambda: not new_threads(before), 10) and km.is_alive()  # its own loop is gone; the kernel is not its to stop

def test_blocking_client_of_a_remote_kernel(tmp_path):
    proc, url, token = jupyter_server(tmp_path)
    try:
        with ConBlockingKernelManager(RemoteKernelManager(url, token=token)) as km:
            km.start_kernel()
            kc = km.client()
            with ThreadPoolExecutor(8) as ex:
                res = list(ex.map(lambda i: kc.execute(f'print({i})', outputs=True, timeout=60).outputs[0].text, range(40)))
            assert res == [f'{i}\n' for i in range(40)]
    finally: stop(proc)

CTRL_C = '''
    import os, signal, sys, threading, time
    sys.path.insert(0, sys.argv[1])
    from conftest import settled
    from jupyter_client.session import Session
    from conkernelclient.blocking import ConBlockingKernelManager
    # Python leaves SIGINT ignored if its parent ignored it (a background job): install what a terminal's Ctrl-C meets
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with ConBlockingKernelManager(session=Session(key=b"x")) as km:
        km.start_kernel(); kc = km.client()
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        t0 = time.monotonic()
        try: kc.execute("import time; time.sleep(3)", reply=True, timeout=60)
        except KeyboardInterrupt: print("interrupted after", round(time.monotonic()-t0, 1))
        deadline = time.monotonic()+10  # the cancel reaches the loop
        while not settled(kc.aclient) and time.monotonic() < deadline: time.sleep(0.01)
        print("settled", settled(kc.aclient))
        print("next", kc.execute("1+1", reply=True, timeout=30)["content"]["status"])
'''

def test_ctrl_c_in_a_blocked_call_abandons_its_request(tmp_path):
    p = run_script(tmp_path, CTRL_C, str(Path(__file__).parent), timeout=90)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith('interrupted after') and float(lines[0].split()[-1]) < 2, p.stdout
    assert lines[1:] == ['settled True', 'next ok'], p.stdout
