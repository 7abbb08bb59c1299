"The warm pool: leases at once, recycling, health, failures and a leak-free close, on real kernels, local and on a Jupyter Server."
import asyncio, functools, os, signal, statistics, threading, time
import nbformat, psutil, pytest
from nbclient import NotebookClient
from jupyter_client.session import Session
from conkernelclient import ConKernelManager, DeadKernelError, RemoteKernelManager
from conkernelclient.pool import KernelPool, PoolClosedError
from conftest import open_fds, run
from servers import until

pytestmark = pytest.mark.timeout(240)

def kernels():
    "The live kernel processes this process started (its children), with their command lines."
    return [(p.pid, ' '.join(p.cmdline())) for p in psutil.Process().children(recursive=True) if p.is_running() and p.status()!=psutil.STATUS_ZOMBIE]

async def value(kc, expr:str):
    "The repr of `expr` in `kc`'s kernel, or the name of the error it raises."
    r = await kc.execute(f'print(repr({expr}))', outputs=True, timeout=30)
    return r.outputs[0].get('text', '').strip() if r.outputs and r.outputs[0].output_type=='stream' else r.reply['content'].get('ename')

def test_a_lease_from_a_warm_pool_is_at_once_where_a_cold_start_takes_seconds():
    async def main():
        cold = []
        for _ in range(3):
            t = time.monotonic()
            km = ConKernelManager(); await km.start_kernel(); kc = await km.client().start_channels()
            cold.append(time.monotonic()-t)
            await kc.astop_channels(); await km.shutdown_kernel(now=True)
        async with KernelPool(size=1, warmup='import json') as pool:
            warm = []
            for _ in range(3):
                await until(lambda: pool._n_idle==1, 60)  # warm again
                t = time.monotonic()
                async with await pool.lease(timeout=60) as lease:
                    warm.append(time.monotonic()-t)
                    assert await value(lease.kc, "'json' in globals()")=='True'  # warmed
        print(f'\ncold start (manager + client) {statistics.median(cold)*1000:.0f} ms; lease from a warm pool {statistics.median(warm)*1000:.1f} ms')
        assert max(warm) < min(cold)/10
    run(main(), 200)

def test_leases_never_see_each_others_state_unless_asked():
    async def main():
        async with KernelPool(size=1) as pool:  # one lease per kernel
            pids = set()
            for i in range(3):
                async with await pool.lease(timeout=60) as lease:
                    assert await value(lease.kc, 'x')=='NameError'
                    await lease.kc.execute(f'x = {i}', reply=True, timeout=10)
                    pids.add(lease.km.provisioner.pid)
            assert len(pids)==3
        async with KernelPool(size=1, leases=3) as pool:  # up to three leases per kernel, restarted between them
            ids = []
            for i in range(5):
                async with await pool.lease(timeout=60) as lease:
                    assert await value(lease.kc, 'x')=='NameError'
                    await lease.kc.execute(f'x = {i}', reply=True, timeout=10)
                    ids.append(lease.km.kernel_id)
            assert 1 < max(map(ids.count, ids)) <= 3, ids  # reused, and no more than three times
        async with KernelPool(size=1, leases=3, reset=False) as pool:  # asked for: the state carries over
            seen = {}
            for i in range(5):
                async with await pool.lease(timeout=60) as lease:
                    seen.setdefault(lease.km.kernel_id, []).append(await value(lease.kc, 'x'))
                    await lease.kc.execute(f'x = {i}', reply=True, timeout=10)
            assert any(len(v) > 1 for v in seen.values()) and all(v[0]=='NameError' and 'NameError' not in v[1:] for v in seen.values()), seen
    run(main(), 200)

def test_a_leased_kernel_killed_fails_its_requests_and_the_pool_is_back_to_size():
    async def main():
        async with KernelPool(size=2) as pool:
            await until(lambda: pool._n_idle==2, 60)
            lease = await pool.lease(timeout=10)
            pending = lease.kc.execute('import time; time.sleep(30)', reply=True, timeout=60)
            await asyncio.sleep(0.3)
            os.kill(lease.km.provisioner.pid, signal.SIGKILL)
            with pytest.raises(DeadKernelError): await asyncio.wait_for(pending, 10)
            await lease.release()
            await until(lambda: pool._n_idle==2, 60)
            idle = [await pool.lease(timeout=10) for _ in range(2)]
            assert all([await l.km.is_alive() for l in idle])
            for l in idle: await l.release()
    run(main(), 200)

def test_a_dead_idle_kernel_is_never_leased():
    async def main():
        async with KernelPool(size=1) as pool:
            await until(lambda: pool._n_idle==1, 60)
            victim = pool._idle._queue[0]
            os.kill(victim.km.provisioner.pid, signal.SIGKILL)
            await until(lambda: victim.kc._state=='closed', 10)
            async with await pool.lease(timeout=60) as lease:
                assert lease.km is not victim.km and await value(lease.kc, '1+1')=='2'
    run(main(), 200)

def test_200_leases_and_a_close_leave_no_process_descriptor_or_thread_behind():
    async def main():
        async with KernelPool(size=1, leases=100, reset=False) as pool:  # ... lease, use, hand back: one kernel serves 100 leases
            lease = await pool.lease(timeout=60); await lease.release()
            await until(lambda: pool._n_idle==2 and not pool._tasks, 60)  # it is back, its replacement is warm: nothing in flight
            fds, threads = open_fds(), threading.active_count()
            for i in range(200):
                job = None
                async with await pool.lease(timeout=60) as lease:
                    assert (await lease.kc.execute(f'{i}', reply=True, timeout=10))['content']['status']=='ok'
                    if i%20==0: job = await lease.km.client().start_channels()  # a client of the job's own (as nbclient makes)...
                assert job is None or job._state=='closed'  # ...stopped when the lease is handed back
            await until(lambda: not pool._tasks, 60)  # kernels that served their 100 leases shut down, their replacements warm
            assert open_fds() <= fds+5 and threading.active_count() <= threads+1, (open_fds(), fds, threading.active_count(), threads)
        assert not kernels() and threading.active_count() <= threads
    run(main(), 220)

def test_a_failing_start_or_warm_up_fails_the_lease_at_once_and_leaves_nothing():
    async def main():
        async with KernelPool(functools.partial(ConKernelManager, kernel_name='no-such-kernel'), size=1) as pool:
            with pytest.raises(Exception, match='no-such-kernel'): await pool.lease(timeout=30)
        async with KernelPool(size=1, warmup='1/0') as pool:
            with pytest.raises(RuntimeError, match='ZeroDivisionError'): await pool.lease(timeout=60)
            await until(lambda: not pool._n_starting, 60)
        assert not kernels()
    run(main(), 200)

def test_closing_shuts_down_every_kernel_idle_leased_or_starting_and_refuses_leases():
    async def main():
        pool = KernelPool(size=2, starts=1)
        pool._fill()
        lease = await pool.lease(timeout=60)  # one leased, the others idle or still starting
        assert kernels()
        await pool.aclose()
        assert not kernels() and lease.kc._state=='closed'
        with pytest.raises(PoolClosedError): await pool.lease()
        await lease.release()  # after the close: nothing to do
    run(main(), 200)

def test_a_lease_cancelled_while_it_waits_takes_nothing():
    async def main():
        async with KernelPool(size=1) as pool:
            with pytest.raises(TimeoutError): await pool.lease(timeout=0.05)  # the first kernel is still starting
            await until(lambda: pool._n_idle==1, 60)
            async with await pool.lease(timeout=1) as lease: assert await value(lease.kc, '1')=='1'
    run(main(), 200)

def test_remote_kernels_from_a_pool(server):
    url, token = server
    async def main():
        async with KernelPool(functools.partial(RemoteKernelManager, url, token=token), size=1, leases=2) as pool:
            for i in range(2):
                async with await pool.lease(timeout=60) as lease:
                    assert await value(lease.kc, 'x')=='NameError'
                    await lease.kc.execute('x = 1', reply=True, timeout=10)
            ids = {k['id'] for k in await lease.km.list_kernels()}
        assert not ids & {k['id'] for k in await RemoteKernelManager(url, token=token).list_kernels()}
    run(main(), 200)

def small_notebooks(n:int):
    return [nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f'x = {i}\nprint(x * 2)'), nbformat.v4.new_code_cell('x + 1')]) for i in range(n)]

def test_nbclient_over_20_notebooks_with_the_pool_gives_the_default_managers_outputs():
    def outputs(nb): return [[{k: v for k,v in o.items() if k!='execution_count'} for o in c.outputs] for c in nb.cells]
    async def main():
        plain, pooled = small_notebooks(20), small_notebooks(20)
        t = time.monotonic()
        for nb in plain: await NotebookClient(nb, kernel_manager_class=ConKernelManager, timeout=60).async_execute()
        t_plain = time.monotonic()-t
        t = time.monotonic()
        pids = set()
        async with KernelPool(size=2) as pool:
            for nb in pooled:
                async with await pool.lease(timeout=60) as lease:
                    pids.add(lease.km.provisioner.pid)
                    await NotebookClient(nb, km=lease.km, timeout=60).async_execute()
        t_pooled = time.monotonic()-t
        print(f'\n20 small notebooks through nbclient: {t_plain:.1f} s with a kernel started per notebook, {t_pooled:.1f} s leased from a pool of 2')
        assert [outputs(nb) for nb in pooled]==[outputs(nb) for nb in plain] and outputs(plain[3])[0][0]['text']=='6\n'
        assert len(pids)==20 and not {pid for pid,_ in kernels()} & pids  # a kernel per notebook, none left running
    run(main(), 220)

def test_papermill_over_20_notebooks_with_a_blocking_pool_gives_the_default_managers_outputs(tmp_path):
    "papermill (blocking, its own event loop) runs each notebook on a leased kernel it is handed (`km=`), unchanged, with the outputs of its default manager."
    import papermill as pm
    from conkernelclient import ConBlockingKernelPool
    def outputs(path): return [[{k: v for k,v in o.items() if k!='execution_count'} for o in c.outputs] for c in nbformat.read(path, 4).cells]
    paths = []
    for i, nb in enumerate(small_notebooks(20)):
        nb.metadata.kernelspec = dict(name='python3', display_name='Python 3', language='python')
        nbformat.write(nb, tmp_path/f'in{i}.ipynb'); paths.append(str(tmp_path/f'in{i}.ipynb'))
    t = time.monotonic()
    for i, p in enumerate(paths): pm.execute_notebook(p, str(tmp_path/f'plain{i}.ipynb'), progress_bar=False)
    t_plain, t = time.monotonic()-t, time.monotonic()
    pids = set()
    with ConBlockingKernelPool(size=2) as pool:
        for i, p in enumerate(paths):
            with pool.lease(timeout=60) as lease:
                pids.add(lease.akm.provisioner.pid)
                pm.execute_notebook(p, str(tmp_path/f'pooled{i}.ipynb'), km=lease.akm, progress_bar=False)
    t_pooled = time.monotonic()-t
    print(f'\n20 small notebooks through papermill: {t_plain:.1f} s with its default manager, {t_pooled:.1f} s leased from a pool of 2')
    plain, pooled = [outputs(tmp_path/f'plain{i}.ipynb') for i in range(20)], [outputs(tmp_path/f'pooled{i}.ipynb') for i in range(20)]
    assert pooled==plain and plain[3][0][0]['text']=='6\n' and plain[3][1][0]['data']=={'text/plain': '4'}
    assert len(pids)==20 and not {pid for pid,_ in kernels()} & pids  # a kernel per notebook, none left running

def test_a_blocking_pool_serves_threads_and_a_dropped_lease_leaves_the_pools_client_alone():
    import gc
    from concurrent.futures import ThreadPoolExecutor
    from conkernelclient import ConBlockingKernelPool
    threads = threading.active_count()
    pids = set()
    with ConBlockingKernelPool(size=2) as pool:  # one lease per kernel
        def job(i):
            with pool.lease(timeout=60) as lease:
                pids.add(lease.akm.provisioner.pid)
                r = lease.kc.execute(f'print(globals().get("mine"), {i}); mine = {i}', outputs=True, timeout=30)
                return r.outputs[0].text.split()
        with ThreadPoolExecutor(4) as ex: seen = list(ex.map(job, range(8)))
    assert seen == [['None', str(i)] for i in range(8)] and len(pids) == 8  # a fresh kernel each, none seeing another's state
    assert not {pid for pid,_ in kernels()} & pids and threading.active_count() <= threads
    with ConBlockingKernelPool(size=1, leases=3, reset=False) as pool:  # a kernel reused: a dropped lease must not stop its client
        lease = pool.lease(timeout=60); first = lease.akm.kernel_id; lease.release()
        del lease; gc.collect()
        lease = pool.lease(timeout=60)
        assert lease.akm.kernel_id == first and lease.kc.execute('1', reply=True, timeout=10)['content']['status'] == 'ok'
        lease.release()

def test_a_blocking_pool_never_closed_shuts_its_kernels_down_at_exit(tmp_path):
    "A script that leases and exits without closing: its kernels are shut down by the exit hook (their connection files removed), not orphaned."
    import subprocess, sys
    script = "from conkernelclient import ConBlockingKernelPool\npool = ConBlockingKernelPool(size=1)\nlease = pool.lease(timeout=60)\n" \
             "print(lease.akm.provisioner.pid, lease.akm.connection_file, flush=True)\n"
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120)
    pid, path = out.stdout.split()
    assert out.returncode == 0 and not os.path.exists(path), out.stderr[-2000:]  # a kernel that died with its parent keeps its file
    assert not psutil.pid_exists(int(pid)) or psutil.Process(int(pid)).status()==psutil.STATUS_ZOMBIE

def test_at_most_starts_kernels_start_at_a_time():
    "However many kernels the pool needs, no more than `starts` are starting at once."
    live, most = 0, 0
    class Counted(ConKernelManager):
        async def start_kernel(self, **kw):
            nonlocal live, most
            live += 1; most = max(most, live)
            try: await super().start_kernel(**kw)
            finally: live -= 1
    async def main():
        async with KernelPool(Counted, size=4, starts=2) as pool:
            await until(lambda: pool._n_idle==4, 90)
        assert most == 2
    run(main(), 150)
