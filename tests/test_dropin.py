"Drop-in behaviour: code written for jupyter_client's AsyncKernelClient (nbclient, papermill, its own tests) works unchanged."
import asyncio, gc, queue, time, warnings
import pytest
from jupyter_client.session import Session
from jupyter_core.utils import ensure_async
from conkernelclient import ClientClosedError, ConKernelManager, InputError, StartTimeoutError
from conkernelclient.tinykernel import tiny_manager
from conftest import kernel, run

pytestmark = pytest.mark.timeout(120)

def test_jupyter_client_start_sequence_and_nbclients():
    "`kc.start_channels(); await kc.wait_for_ready()` and `await ensure_async(kc.start_channels())` both work, warning-free."
    async def main():
        async with kernel(clients=0) as (km,):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter('always')
                a = km.client()
                a.start_channels()  # not awaited, as jupyter_client's callers do: it connects and routes now
                fut = a.execute('6*7', reply=True, timeout=30)  # sendable before readiness; answered once the kernel is up
                await a.wait_for_ready(timeout=30)
                assert await a.is_alive()
                assert (await fut)['content']['status'] == 'ok'
                b = km.client()
                assert await ensure_async(b.start_channels()) is b
                await b.wait_for_ready(timeout=30)  # nbclient's second readiness check is harmless
                assert (await b.execute('1', reply=True, timeout=10))['content']['status'] == 'ok'
                c = km.client()
                c.start_channels()
                c.stop_channels()  # stopped before anyone waited: no hang, nothing left running
                for kc in (a, b): await kc.astop_channels()
                del a, b, c; gc.collect()
            assert not [w for w in caught if 'never awaited' in str(w.message)], [str(w.message) for w in caught]
    run(main())

def test_lifecycle_errors_are_precise():
    async def main():
        async with kernel() as (km, kc):
            with pytest.raises(RuntimeError, match='already called'): kc.start_channels()
            fresh = km.client()
            fresh.stop_channels(); fresh.stop_channels()  # stopping a client that never started does nothing, twice
            with pytest.raises(ClientClosedError, match='cannot start again'): fresh.start_channels()
            other = km.client(); await other.start_channels(); await other.astop_channels()
            with pytest.raises(ClientClosedError, match='cannot start again'): other.start_channels()
    run(main())
    with pytest.raises(RuntimeError, match='running event loop'): ConKernelManager().client().start_channels()

def test_channel_readers_and_routed_requests_never_steal_from_each_other():
    "A `get_msg` parked on every channel while 200 routed requests run: each side gets exactly its own messages."
    async def main():
        async with kernel() as (km, kc):
            got = {n: [] for n in ('shell', 'iopub', 'stdin', 'control')}
            async def park(name):
                ch = getattr(kc, f'{name}_channel')
                while True:
                    try: got[name].append(await ch.get_msg(timeout=1.5))
                    except queue.Empty: return
            readers = [asyncio.create_task(park(n)) for n in got]
            await asyncio.sleep(0.1)  # every reader is parked before the first request goes out
            code = 'import time; print({i}, flush=True); time.sleep(0.001)'
            futs, outs, loose = [], [], []
            for i in range(200):
                if i % 2: outs.append(kc.execute(code.format(i=i), outputs=True, timeout=60))
                else: futs.append(kc.execute(code.format(i=i), reply=True, timeout=60))
                if i % 10 == 0: loose.append(kc.execute(f'{i}'))  # fire-and-forget: its reply is for channel readers
            replies, results = await asyncio.gather(asyncio.gather(*futs), asyncio.gather(*outs))
            await asyncio.wait_for(asyncio.gather(*readers), 30)
            assert all(r['content']['status'] == 'ok' for r in replies) and len(replies) == 100
            assert [r.outputs[0].text for r in results] == [f'{i}\n' for i in range(1, 200, 2)]  # each routed request: its own print, none lost
            assert [m['parent_header']['msg_id'] for m in got['shell']] == loose  # exactly the unrouted replies, in order
            routed = {r.reply['parent_header']['msg_id'] for r in results}
            parents = [m['parent_header'].get('msg_id') for m in got['iopub']]
            assert not routed & set(parents)  # no iopub message of an outputs=True request reached the channel reader
            fired = {r['parent_header']['msg_id'] for r in replies} | set(loose)
            assert {p for p in parents if p} == fired  # every unrouted request's iopub messages did
            printed = {}
            for m in got['iopub']:
                if m['msg_type'] == 'stream': printed[m['parent_header']['msg_id']] = printed.get(m['parent_header']['msg_id'], '') + m['content']['text']
            n_prints = len(printed)
            assert sorted(printed.values()) == sorted(f'{i}\n' for i in range(0, 200, 2))  # every unrouted print, whole
            assert got['stdin'] == got['control'] == []
            print(f"\nparked readers: shell got {len(got['shell'])}/{len(loose)} unrouted replies, iopub {len(got['iopub'])} "
                  f"messages ({n_prints}/100 unrouted prints), stdin/control 0; routed: {len(replies)}+{len(results)}/200 complete")
    run(main())

@pytest.mark.parametrize('delay', [0.7, 2])
def test_is_alive_at_once_on_a_kernel_that_binds_late(delay):
    "A kernel that sleeps before binding: the heartbeat misses its first beat (polled 1 s after it starts), yet the kernel just answered."
    async def main():
        async with kernel(make=lambda **kw: tiny_manager(bind_delay=delay, **kw)) as (km, kc):
            checks = []
            for _ in range(10):
                checks.append(await kc.is_alive())
                await asyncio.sleep(0.1)
            assert all(checks), checks
    run(main())

def test_start_timeout_is_also_the_runtime_error_jupyter_client_raises():
    async def main():
        km = ConKernelManager(session=Session(key=b'right'))
        await km.start_kernel()
        try:
            kc = km.client(session=Session(key=b'wrong'))
            kc.start_channels()
            with pytest.raises(RuntimeError, match='session key') as e: await kc.wait_for_ready(timeout=3)
            assert isinstance(e.value, (TimeoutError, StartTimeoutError))
            await kc.astop_channels()
        finally: await km.shutdown_kernel(now=True)
    run(main())

def test_execute_interactive_with_stdin_hook_and_kc_input():
    async def main():
        async with kernel() as (km, kc):
            seen, outs = [], []
            def hook(msg): seen.append(msg['content']['prompt']); kc.input('Ada')
            async def ahook(msg): await asyncio.sleep(0.01); kc.input('Bob')
            r = await kc.execute_interactive('print("hi", input("name? "))', allow_stdin=True, stdin_hook=hook,
                                             output_hook=outs.append, timeout=20)
            assert r['content']['status'] == 'ok' and seen == ['name? ']
            assert 'hi Ada\n' in [m['content'].get('text') for m in outs]
            r = await kc.execute_interactive('x = input()', allow_stdin=True, stdin_hook=ahook, output_hook=outs.append, timeout=20)
            assert (await kc.execute('x', reply=True, user_expressions=dict(x='x'), timeout=10))['content']['user_expressions']['x']['data']['text/plain'] == "'Bob'"
            # jupyter_client's own style: send, read the input_request from stdin, answer it with kc.input
            mid = kc.execute('y = input("?")', allow_stdin=True)
            req = await kc.get_stdin_msg(timeout=10)
            assert req['parent_header']['msg_id'] == mid
            kc.input('Cy')
            assert (await kc._async_recv_reply(mid, timeout=10))['content']['status'] == 'ok'
            with pytest.raises(InputError, match='no input_request'): kc.input('nobody asked')
    run(main())

def test_failed_on_input_interrupts_as_the_kernelspec_says():
    "The tiny kernel's input() ends only on SIGINT, as its kernelspec says: an `interrupt_request` alone would leave it stuck."
    async def main():
        async with kernel(make=lambda **kw: tiny_manager(interrupt_mode='signal', **kw)) as (km, kc):
            kc.interrupt_grace = 3
            def refuse(prompt, password): raise PermissionError('no')
            t0 = time.monotonic()
            with pytest.raises(PermissionError): await kc.execute('%input', on_input=refuse, reply=True, timeout=20)
            secs = time.monotonic()-t0
            assert (await kc.execute('', reply=True, timeout=5))['content']['status'] == 'ok'  # the kernel left input()
            assert secs < kc.interrupt_grace  # it failed once the kernel finished the request, not when the grace ran out
            print(f'\nsignal-mode kernel: the request failed {secs:.2f} s after a refused input')
    run(main())

def test_nbclient_sees_kernel_death_as_its_own_dead_kernel_error_sooner():
    "nbclient catches its own DeadKernelError: a dead client's channel says Empty at once, instead of at nbclient's next 1 s liveness poll."
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError as NbDead
    from jupyter_client import AsyncKernelManager
    async def main(cls):
        "Seconds from the start of the cell that kills its kernel to nbclient's DeadKernelError."
        cells = [nbformat.v4.new_code_cell('print(1)'), nbformat.v4.new_code_cell('import os, signal, time; time.sleep(0.2); os.kill(os.getpid(), signal.SIGKILL)')]
        started = {}
        client = NotebookClient(nbformat.v4.new_notebook(cells=cells), kernel_manager_class=cls, timeout=60,
                                on_cell_execute=lambda cell, cell_index: started.setdefault(cell_index, time.monotonic()))
        with pytest.raises(NbDead): await client.async_execute()
        return time.monotonic()-started[1]
    ours, vanilla = run(main(ConKernelManager)), run(main(AsyncKernelManager))
    print(f'\nnbclient, kernel killed in a cell 0.2 s in: DeadKernelError {ours:.2f} s after the cell began (ConKernelManager) '
          f'vs {vanilla:.2f} s (AsyncKernelManager)')
    assert ours < 0.6*vanilla, (ours, vanilla)  # vanilla waits for nbclient's liveness poll (every 1 s); ours, for its watchdog (0.2 s)
