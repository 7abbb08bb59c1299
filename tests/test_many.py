"Many kernels in one process: no thread or timer per client, a SIGKILL noticed at once, and a named error when descriptors run out."
import asyncio, errno, json, os, resource, signal, subprocess, sys, textwrap, time
import pytest
from conkernelclient import DeadKernelError
from conkernelclient.tinykernel import tiny_manager
from conftest import open_fds, run

pytestmark = pytest.mark.timeout(300)

def os_threads(): return len(os.listdir('/proc/self/task'))  # ZMQ's I/O threads count too

def cpu(): r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime+r.ru_stime

async def started(n:int, at_once:int=1, **client_kw):
    "`n` tiny kernels, each with one ready client: [(km, kc)]; started `at_once` at a time (one: the other test process keeps its core)."
    gate = asyncio.Semaphore(at_once)
    async def one():
        async with gate:
            km = tiny_manager()
            await km.start_kernel()
            try: return km, await asyncio.wait_for(km.client(**client_kw).start_channels(), 60)
            except BaseException: await km.shutdown_kernel(now=True); raise
    return await asyncio.gather(*[one() for _ in range(n)])

async def stop_all(pairs):
    for km, kc in pairs:
        await kc.astop_channels()
        await km.shutdown_kernel(now=True)

async def idle_cost(seconds:float):
    "(CPU share of one core, live timers on the loop) while nobody asks anything for `seconds`."
    t0, c0 = time.perf_counter(), cpu()
    await asyncio.sleep(seconds)
    return (cpu()-c0)/(time.perf_counter()-t0), sum(not h.cancelled() for h in asyncio.get_running_loop()._scheduled)

def test_a_hundred_idle_clients_cost_the_threads_and_timers_of_ten_and_a_killed_kernel_is_noticed_at_once():
    "Threads and loop timers do not grow with the clients; a SIGKILL fails its kernel's request long before any tick would; the other 99 carry on."
    async def main():
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit[1], limit[1]))  # 100 clients and their kernels' managers need ~1,300
        pairs = []
        try:
            pairs += await started(1, watch_interval=60)  # the one to kill: no tick of its own during the test, only the OS's word can tell
            pairs += await started(9)
            threads10, (cpu10, timers10), fds10 = os_threads(), await idle_cost(3), open_fds()
            pairs += await started(90)
            threads100, (cpu100, timers100), fds100 = os_threads(), await idle_cost(3), open_fds()
            print(f'\n10 clients: {threads10} threads, {timers10} loop timers, idle CPU {cpu10:.2%}; '
                  f'100 clients: {threads100} threads, {timers100} loop timers, idle CPU {cpu100:.2%}; {(fds100-fds10)/90:.1f} descriptors a kernel and client')
            assert threads100==threads10 and timers100==timers10, (threads10, threads100, timers10, timers100)
            assert (fds100-fds10)/90 < 14, (fds10, fds100)  # the README's 11 a client and 2 a kernel's manager (25 with a thread and contexts each)
            (km, kc), others = pairs[0], pairs[1:]
            req = kc.execute('%noreply', reply=True)  # pending until the kernel dies
            await asyncio.wait_for(kc.execute('1', reply=True), 30)  # the kernel has read it (one shell, in order)
            t0 = time.monotonic()
            os.kill(km.provisioner.process.pid, signal.SIGKILL)
            with pytest.raises(DeadKernelError): await asyncio.wait_for(req, 30)
            noticed = time.monotonic()-t0
            print(f'SIGKILL noticed after {noticed*1000:.0f} ms (its watch_interval: {kc.watch_interval} s)')
            assert noticed < kc.watch_interval/10, noticed
            replies = await asyncio.wait_for(asyncio.gather(*[c.execute('1', reply=True) for _, c in others]), 60)
            assert [r['content']['status'] for r in replies]==['ok']*99 and all(c._state=='ready' for _, c in others)
        finally:
            await stop_all(pairs)
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)
    run(main(), 280)

def test_the_watcher_is_one_timer_for_every_client_of_a_loop_and_leaves_with_the_last():
    async def main():
        from conkernelclient.core import _watchers
        loop = asyncio.get_running_loop()
        pairs = await started(3)
        try:
            w = _watchers[loop]
            assert set(w.due)=={kc for _, kc in pairs} and len({round(d, 6) for d in w.due.values()})==1  # one tick for all
            assert sum(h._callback==w._tick and not h.cancelled() for h in loop._scheduled)==1
        finally: await stop_all(pairs)
        assert loop not in _watchers and not any(h._callback==w._tick and not h.cancelled() for h in loop._scheduled)
    run(main())

def test_a_watch_interval_that_cannot_tick_is_refused_at_start():
    async def main():
        km = tiny_manager()
        for bad in (0, -1, float('nan'), float('inf')):
            kc = km.client(watch_interval=bad)
            with pytest.raises(ValueError, match='watch_interval'): kc.start_channels()
            assert kc._state=='new' and kc._loop is None
    run(main())

FILL = textwrap.dedent('''
    import asyncio, errno, json, os, resource, sys, time
    from conkernelclient.tinykernel import tiny_manager
    async def main():
        used = len(os.listdir('/proc/self/fd'))
        resource.setrlimit(resource.RLIMIT_NOFILE, (used+int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        pairs, err = [], None
        for _ in range(50):
            km = tiny_manager(); t0 = time.monotonic()
            try:
                await asyncio.wait_for(km.start_kernel(), 60)
                pairs.append((km, None))
                pairs[-1] = (km, await asyncio.wait_for(km.client().start_channels(), 60))
            except OSError as e:
                err = dict(errno=e.errno, msg=str(e), after=time.monotonic()-t0, started=len(pairs)); break
        for km, kc in pairs:
            if kc is not None: kc.stop_channels()
            await km.shutdown_kernel(now=True)
        print(json.dumps(err))
    asyncio.run(main())
''')

def test_the_first_start_that_cannot_fit_under_the_descriptor_limit_gets_a_named_error(tmp_path, room=80):
    "Under a lowered limit, kernels and clients start until one would not fit; that one (a kernel or a client) fails at once, saying why."
    script = tmp_path/'fill.py'; script.write_text(FILL)
    out = subprocess.run([sys.executable, str(script), str(room)], capture_output=True, text=True, timeout=240)
    err = json.loads(out.stdout.strip().splitlines()[-1])
    assert err is not None and err['errno']==errno.EMFILE, (err, out.stderr[-2000:])
    assert 'too many open files' in err['msg'] and 'file descriptors' in err['msg'] and 'ulimit -n' in err['msg'], err
    assert err['after'] < 10 and err['started'] >= 3, err  # at once, not a start-up timeout; and only when the room is really gone
    print(f"\nlimit +{room}: {err['started']} started, then: {err['msg']}")

def test_a_manager_done_with_its_view_of_the_shared_context_leaves_every_other_kernel_working():
    "A manager destroys the context it was given as `jupyter_client`'s does; here that is a view, and the process's one context goes on."
    async def main():
        pairs = await started(2)
        try:
            (km1, kc1), (km2, kc2) = pairs
            await kc1.astop_channels(); await km1.shutdown_kernel(now=True)
            assert km1.context.closed and not km2.context.closed and not kc2.context.closed
            assert (await kc2.execute('1', reply=True, timeout=30))['content']['status']=='ok'
            pairs[1:] += await started(1)  # and a new kernel and client start on it
            assert (await pairs[-1][1].execute('1', reply=True, timeout=30))['content']['status']=='ok'
        finally: await stop_all(pairs[1:])
    run(main())
