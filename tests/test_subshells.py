"Kernel subshells (JEP 91) on real ipykernel 7, and the error on a kernel without them."
import asyncio, subprocess, sys, time
from pathlib import Path
import pytest
from conkernelclient import KernelFeatureError
from conkernelclient.tinykernel import tiny_manager
from conftest import kernel, run, settled
from test_requests import running

pytestmark = pytest.mark.timeout(120)
SLEEP = 1  # seconds each parallel snippet sleeps

def timed(i:int):
    "A snippet that sleeps `SLEEP` seconds and prints `i`, when it began and when it ended (no globals: subshells share them)."
    return f'import time; print({i}, time.time(), time.sleep({SLEEP}) or time.time())'

def overlapped(texts:list):
    "Whether the `timed(i)` snippets that printed `texts` (in order of i) all ran at once: each began before any ended."
    spans = [t.split() for t in texts]
    assert [int(i) for i,_,_ in spans] == list(range(len(texts)))  # each result holds its own snippet's output
    return max(float(b) for _,b,_ in spans) < min(float(e) for _,_,e in spans)

def test_four_one_second_sleeps_on_four_subshells_run_in_parallel():
    async def main():
        async with kernel() as (km, kc):
            async with kc.subshells(4) as pool:
                assert len(await kc.list_subshells()) == 4
                t0 = time.monotonic()
                results = await pool.map([timed(i) for i in range(4)], timeout=20)
                secs = time.monotonic()-t0
            print(f'\n4 x time.sleep({SLEEP}) on 4 subshells: {secs:.2f} s')
            assert all(r.status == 'ok' for r in results) and overlapped([r.outputs[0].text for r in results])
            assert secs < 1.5*SLEEP  # one sleep, not two or more after one another
            assert await kc.list_subshells() == []
    run(main())

def test_subshell_and_main_shell_outputs_never_cross():
    code = 'import time\nfor i in range(10):\n    print("{tag}", i, flush=True)\n    time.sleep(0.01)'
    async def main():
        async with kernel() as (km, kc):
            sids = [await kc.create_subshell() for _ in range(2)]
            futs = {tag: kc.execute(code.format(tag=tag), outputs=True, timeout=30, subshell_id=sid)
                    for tag, sid in [('main', None), ('sub0', sids[0]), ('sub1', sids[1])]}
            futs['main2'] = kc.execute(code.format(tag='main2'), outputs=True, timeout=30)
            for tag, res in zip(futs, await asyncio.gather(*futs.values())):
                assert res.status == 'ok'
                assert ''.join(o.text for o in res.outputs) == ''.join(f'{tag} {i}\n' for i in range(10)), tag
            answer = await kc.execute('x = input("who? ")\nprint(x)', on_input=lambda p, pw: 'sub', outputs=True, timeout=10, subshell_id=sids[0])
            assert answer.outputs[0].text == 'sub\n'  # stdin is routed for subshell requests too
            for sid in sids: await kc.delete_subshell(sid)
            assert await kc.list_subshells() == []
    run(main())

def test_failing_and_cancelled_pools_leave_no_subshells():
    async def main():
        async with kernel() as (km, kc):
            async with kc.subshells(3) as pool:
                res = await pool.map(['raise ValueError("snippet failed")', 'print(1)', 'print(2)'], timeout=20)
            # ipykernel 7.4 shares error and display state across subshells: a parallel snippet's status may read 'error'
            # and concurrent execute_results may go unpublished; printed outputs are reliable, and each request's are its own
            assert res[0].status == 'error' and res[0].outputs[-1].ename == 'ValueError'
            assert [r.outputs[0].text for r in res[1:]] == ['1\n', '2\n']
            assert await kc.list_subshells() == []
            with pytest.raises(ZeroDivisionError):
                async with kc.subshells(2) as pool: 1/0  # the body raises
            assert await kc.list_subshells() == []
            async def use():
                async with kc.subshells(2) as pool: await pool.map(['import time; time.sleep(0.5)']*4, timeout=20)
            task = asyncio.ensure_future(use())
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError): await task
            assert await kc.list_subshells() == []
            assert (await kc.execute('1', reply=True, timeout=10))['content']['status'] == 'ok'
    run(main())

def test_interrupt_stops_the_main_shell_not_a_busy_subshell():
    async def main():
        async with kernel() as (km, kc):
            sid = await kc.create_subshell()
            main_req = await running(kc, 'import time; time.sleep(3)')
            sub_req = await running(kc, 'import time; time.sleep(1)', subshell_id=sid)
            await kc.interrupt(timeout=5)
            m, s = await asyncio.gather(main_req, sub_req)
            assert m['content']['ename'] == 'KeyboardInterrupt' and s['content']['status'] == 'ok'
            await kc.delete_subshell(sid)
    run(main())

def test_kernel_without_subshells_gets_a_clear_error():
    async def main():
        async with kernel(make=tiny_manager) as (km, kc):
            assert not kc.supports('kernel subshells')
            with pytest.raises(KernelFeatureError, match=r"kernel tinykernel 0\.1 does not support 'kernel subshells'"): await kc.create_subshell()
            with pytest.raises(KernelFeatureError): await kc.list_subshells()
            with pytest.raises(KernelFeatureError):
                async with kc.subshells(2): pass
            assert settled(kc)
    run(main())

def test_cli_parallel_runs_snippets_on_subshells():
    exe = str(Path(sys.executable).parent/'conkernelclient')
    p = subprocess.run([exe, '--parallel', '3', 'run', *map(timed, range(3))], capture_output=True, text=True, timeout=100)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    times = [float(l.split(' in ')[1].split(' s')[0]) for l in lines if l.startswith('[')]
    assert len(times) == 3 and overlapped([l for l in lines if not l.startswith('[')]), p.stdout
    assert max(times) < 1.5*SLEEP, p.stdout  # on fewer subshells, a snippet would wait for another to end

async def no_subshells_left(kc, within:float=5):
    "Wait (boundedly) for background clean-up, then check the kernel has no subshells."
    deadline = time.monotonic()+within
    while (left := await kc.list_subshells()) and time.monotonic() < deadline: await asyncio.sleep(0.05)
    return left == []

def test_10_a_pool_cancelled_while_creating_still_deletes_what_it_asked_for():
    async def main():
        async with kernel() as (km, kc):
            async def use(): 
                async with kc.subshells(3) as pool: await asyncio.sleep(10)
            for delay in [0, 0.001, 0.003, 0.006, 0.01, 0.02]:
                task = asyncio.ensure_future(use())
                await asyncio.sleep(delay)
                task.cancel()
                with pytest.raises(asyncio.CancelledError): await task
                assert await no_subshells_left(kc), f'subshells left after a cancel at {delay} s'
            assert (await kc.execute('1', reply=True, timeout=10))['content']['status'] == 'ok'
    run(main())

def test_11_map_cancels_the_siblings_of_a_failed_snippet_before_they_are_sent():
    async def main():
        async with kernel() as (km, kc):
            await kc.execute('hits = []', reply=True, timeout=10)
            async with kc.subshells(1) as pool:
                with pytest.raises(TimeoutError):
                    await pool.map([f'import time; time.sleep(0.6); hits.append({i})' for i in range(5)], timeout=0.3)
                await asyncio.sleep(2)  # the pool is still open: a sibling still sent would have run by now
            r = await kc.execute('', user_expressions=dict(h='hits'), reply=True, timeout=10)
            assert r['content']['user_expressions']['h']['data']['text/plain'] == '[0]'  # only the one already running
            assert await no_subshells_left(kc)
    run(main())
