"The behaviour that proves the client, run over each transport: ZMQ, the kernel websocket (v1 framing) and its legacy JSON protocol."
import asyncio, os, signal, time
import pytest
from jupyter_client.restarter import KernelRestarter
from conkernelclient import ClientClosedError, DeadKernelError, KernelRestartedError
from conkernelclient.subshells import SubshellPool
from conftest import kernel, run, settled
from servers import remote_kernel, running_requests

pytestmark = pytest.mark.timeout(120)

@pytest.fixture(params=['zmq', 'ws', 'ws-json'])
def open_kernel(request, server):
    "`open_kernel(clients)`: an async context manager giving `(km, *clients)` over the transport under test."
    url, token = server
    if request.param=='zmq': return lambda clients=1: kernel(clients)
    traits = dict(protocol='json') if request.param=='ws-json' else {}
    return lambda clients=1: remote_kernel(url, token, clients, **traits)

async def kernel_pid(kc):
    "The kernel's process id."
    r = await kc.execute('', user_expressions=dict(pid='__import__("os").getpid()'), reply=True, timeout=10)
    return int(r['content']['user_expressions']['pid']['data']['text/plain'])

def test_200_concurrent_requests_each_get_their_own_reply(open_kernel):
    async def main():
        async with open_kernel() as (km, kc):
            futs = [kc.execute(f'x = {i}', user_expressions=dict(v='x*2'), reply=True, timeout=60) for i in range(200)]
            for i, r in enumerate(await asyncio.gather(*futs)):
                assert r['content']['user_expressions']['v']['data']['text/plain'] == str(2*i)
            assert settled(kc)
    run(main())

def test_concurrent_requests_get_only_their_own_outputs_and_streams(open_kernel):
    code = 'import time\nfor i in range(10):\n    print("{m}", i, flush=True)\n    time.sleep(0.005)'
    async def main():
        async with open_kernel() as (km, kc):
            futs = [kc.execute(code.format(m=f'm{k}'), outputs=True, timeout=60) for k in range(8)]
            for k, res in enumerate(await asyncio.gather(*futs)):
                assert ''.join(o.text for o in res.outputs) == ''.join(f'm{k} {i}\n' for i in range(10))
            async def collect(tag): return [m async for m in kc.stream(f'print("{tag}")', timeout=30)]
            a, b = await asyncio.gather(collect('A'), collect('B'))
            for tag, msgs in (('A', a), ('B', b)): assert ''.join(m['content']['text'] for m in msgs if m['msg_type']=='stream') == f'{tag}\n'
            rich = await kc.execute('from IPython.display import HTML; HTML("<b>x</b>")', outputs=True, timeout=10)
            assert rich.outputs[0].data['text/html'] == '<b>x</b>'
    run(main())

def test_fire_and_forget_reaches_the_channel_views(open_kernel):
    async def main():
        async with open_kernel() as (km, kc):
            mid = kc.execute('print("unrouted")')
            r = await kc.shell_channel.get_msg(timeout=10)
            assert r['parent_header']['msg_id'] == mid
            seen = []
            while not any(m['msg_type']=='stream' for m in seen): seen.append(await kc.get_iopub_msg(timeout=10))
            while seen[-1]['msg_type']!='status' or seen[-1]['content']['execution_state']!='idle': seen.append(await kc.get_iopub_msg(timeout=10))
            assert ''.join(m['content']['text'] for m in seen if m['msg_type']=='stream') == 'unrouted\n'
    run(main())

def test_concurrent_inputs_get_their_own_answers_and_a_failing_callback_fails_its_request(open_kernel):
    async def main():
        async with open_kernel() as (km, kc):
            async def answer(prompt, password): return prompt*2
            futs = [kc.execute(f'print(input("{c}"))', on_input=answer, outputs=True, timeout=30) for c in 'ab']
            assert [r.outputs[0].text for r in await asyncio.gather(*futs)] == ['aa\n', 'bb\n']
            def refuse(prompt, password): raise PermissionError('no')
            with pytest.raises(PermissionError): await kc.execute('input()', on_input=refuse, reply=True, timeout=30)
            assert (await kc.execute('1', reply=True, timeout=20))['content']['status'] == 'ok'  # the kernel was freed
    run(main())

def test_interrupt_a_long_request_with_two_queued(open_kernel):
    async def main():
        async with open_kernel() as (km, kc):
            long = kc.execute('print("go", flush=True); import time; time.sleep(30)', stop_on_error=False, outputs=True, timeout=60)
            queued = [kc.execute('1', reply=True, timeout=60) for _ in range(2)]
            # running its code, not just dispatched: a SIGINT that lands before ipykernel runs the code is lost (the protocol's race)
            while not any(m['msg_type'] == 'stream' for m in long.request.msgs): await asyncio.sleep(0.01)
            t0 = time.monotonic()
            await km.interrupt_kernel()
            r = (await long).reply
            assert r['content']['ename'] == 'KeyboardInterrupt' and time.monotonic()-t0 < 10
            assert [q['content']['status'] for q in await asyncio.gather(*queued)] == ['ok', 'ok']
    run(main())

def test_timeout_and_cancel_leave_nothing_behind(open_kernel):
    async def main():
        async with open_kernel() as (km, kc):
            slow = kc.execute('import time; time.sleep(1)', reply=True, timeout=0.2)
            with pytest.raises(TimeoutError): await slow
            t = asyncio.ensure_future(kc.execute('import time; time.sleep(0.5)', reply=True))
            await asyncio.sleep(0.05); t.cancel()
            with pytest.raises(asyncio.CancelledError): await t
            assert settled(kc) and (await kc.execute('2', reply=True, timeout=20))['content']['status'] == 'ok'
    run(main())

def test_restart_fails_pending_and_the_client_carries_on(open_kernel):
    async def main():
        async with open_kernel(clients=2) as (km, kc1, kc2):
            futs = [kc.execute('import time; time.sleep(30)', reply=True, timeout=60) for kc in (kc1, kc2)]
            await asyncio.sleep(0.3)
            await km.restart_kernel()
            res = await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), 10)
            assert all(isinstance(r, KernelRestartedError) for r in res), res
            for kc in (kc1, kc2): assert (await kc.execute('1+1', outputs=True, timeout=20)).status == 'ok'
    run(main())

def test_sigkill_fails_every_pending_request_promptly(open_kernel, request):
    remote = request.node.callspec.params['open_kernel']!='zmq'
    async def main():
        async with open_kernel() as (km, kc):
            pid = await kernel_pid(kc)
            futs = await running_requests(kc, 20)
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            res = await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), 30)
            took = time.monotonic()-t0
            # locally the watch polls the process every watch_interval; remotely the server's restarter polls it every time_to_dead
            # seconds (its config is private and empty: the default), then announces `restarting`, and the kernel is restarted
            expected, bound = (KernelRestartedError, 2*KernelRestarter.time_to_dead.default_value) if remote else (DeadKernelError, 5*kc.watch_interval)
            assert all(isinstance(r, expected) for r in res), res
            if remote: assert all('the server is restarting it' in str(r) for r in res), res  # the server's own news, first
            print(f'\n{type(res[0]).__name__} for 20 pending requests {took:.2f} s after SIGKILL (bound {bound:.1f} s)')
            assert took < bound
    run(main())

def test_stop_channels_fails_pending_and_refuses_later_requests(open_kernel):
    async def main():
        async with open_kernel() as (km, kc):
            fut = kc.execute('import time; time.sleep(5)', reply=True, timeout=30)
            await asyncio.sleep(0.1)
            kc.stop_channels()
            with pytest.raises(ClientClosedError): await fut
            with pytest.raises(ClientClosedError): kc.execute('1')
    run(main())

def test_subshells_run_in_parallel(open_kernel):
    async def main():
        async with open_kernel() as (km, kc):
            t0 = time.monotonic()
            async with SubshellPool(kc, 3) as pool:
                res = await asyncio.gather(*[pool.run('import time; time.sleep(1)') for _ in range(3)])
            assert time.monotonic()-t0 < 2.8 and all(r.status=='ok' for r in res)
    run(main())
