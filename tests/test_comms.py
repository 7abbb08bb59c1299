"Comms routed by `comm_id`, over each transport (ZMQ, the websocket's v1 framing and its legacy JSON protocol), on ipykernel's own comm manager."
import asyncio, os, signal
import pytest
from conkernelclient import ClientClosedError, DeadKernelError, KernelRestartedError
from conkernelclient.comms import CommError
from conftest import run
from test_transports import open_kernel  # the fixture: one test per transport

pytestmark = pytest.mark.timeout(120)

ECHO = '''
from comm import get_comm_manager
def echo(comm, open_msg):
    comm.on_msg(lambda m: comm.send(m['content']['data'], buffers=m['buffers']))
get_comm_manager().register_target('echo', echo)
'''

async def ok(kc, code:str):
    r = await kc.execute(code, reply=True, timeout=30)
    assert r['content']['status']=='ok', r['content']

def test_a_kernel_opened_comm_gets_its_open_its_100_messages_in_order_and_its_close(open_kernel):
    async def main():
        async with open_kernel() as (km, kc):
            opened, seen = asyncio.get_running_loop().create_future(), []
            def take(comm):
                comm.on_msg(lambda m: seen.append(m['content']['data']['n']))
                opened.set_result(comm)
            kc.comms.register_target('counter', take)
            await ok(kc, "from comm import create_comm\nc = create_comm(target_name='counter', data={'hello': 1})\n"
                         "for i in range(100): c.send({'n': i})\nc.close({'bye': 1})")
            comm = await asyncio.wait_for(opened, 10)
            assert comm.data=={'hello': 1} and [m['content']['data']['n'] async for m in comm]==list(range(100))
            assert seen==list(range(100)) and comm.closed and comm.close_msg['content']['data']=={'bye': 1} and comm.error is None
            assert not kc.comms.comms and not [m for m in kc._inboxes['iopub'].msgs if m['msg_type'].startswith('comm_')]  # none went astray
    run(main())

def test_a_client_opened_comm_echoes_100_messages_with_their_buffers(open_kernel):
    async def main():
        async with open_kernel() as (km, kc):
            await ok(kc, ECHO)
            comm = await kc.comms.open('echo', data={'x': 1}, timeout=10)
            for i in range(100): comm.send({'i': i}, buffers=[i.to_bytes(2, 'big'), b'tail'])
            got = []
            async for m in comm:
                got.append((m['content']['data']['i'], [bytes(b) for b in m['buffers']]))
                if len(got)==100: break
            assert got==[(i, [i.to_bytes(2, 'big'), b'tail']) for i in range(100)]
            done = await comm.send({'i': -1}, wait=True, timeout=10)  # the kernel has handled it (and echoed it) once this completes
            assert done.reply is None and (await asyncio.wait_for(comm.__anext__(), 10))['content']['data']=={'i': -1}
            comm.close()
            with pytest.raises(CommError, match='closed'): comm.send({})
            assert not kc.comms.comms and not kc._requests
    run(main())

def test_ten_comms_at_once_each_get_only_their_own_messages(open_kernel):
    async def main():
        async with open_kernel() as (km, kc):
            await ok(kc, ECHO)
            comms = await asyncio.gather(*[kc.comms.open('echo', timeout=10) for _ in range(10)])
            for k in range(20):
                for j, comm in enumerate(comms): comm.send({'c': j, 'k': k})
            async def read(comm, j):
                got = []
                async for m in comm:
                    got.append((m['content']['data']['c'], m['content']['data']['k']))
                    if len(got)==20: return got
            got = await asyncio.wait_for(asyncio.gather(*[read(c, j) for j, c in enumerate(comms)]), 30)
            assert got==[[(j, k) for k in range(20)] for j in range(10)]
    run(main())

def test_comm_messages_from_a_kernel_thread_reach_their_comm_and_no_requests_outputs(open_kernel):
    "Unparented (sent from a thread, or parented by whatever request runs): all reach the comm, none leak into a request's outputs."
    async def main():
        async with open_kernel() as (km, kc):
            opened = asyncio.get_running_loop().create_future()
            kc.comms.register_target('ticker', opened.set_result)
            await ok(kc, "import threading, time\nfrom comm import create_comm\nt = create_comm(target_name='ticker')\n"
                         "def tick():\n    for i in range(200): t.send({'n': i}); time.sleep(0.001)\n"
                         "th = threading.Thread(target=tick); th.start()")
            comm = await asyncio.wait_for(opened, 10)
            results = await asyncio.gather(*[kc.execute(f'import time; time.sleep(0.01); print({i})', outputs=True, timeout=30) for i in range(20)])
            await ok(kc, 'th.join(); t.close()')
            assert [m['content']['data']['n'] async for m in comm]==list(range(200))
            for i, r in enumerate(results):
                assert [o.text for o in r.outputs]==[f'{i}\n'] and not [m for m in r.msgs if m['msg_type'].startswith('comm_')]
    run(main())

def test_an_open_on_a_target_the_kernel_lacks_fails_at_once_and_leaves_nothing(open_kernel):
    async def main():
        async with open_kernel() as (km, kc):
            with pytest.raises(CommError, match='no-such-target'): await kc.comms.open('no-such-target', timeout=10)
            assert not kc.comms.comms and not kc._requests
            with pytest.raises(TypeError, match='buffers'): await kc.comms.open('echo', buffers='not a list')
            with pytest.raises(TypeError, match='data'): await kc.comms.open('echo', data=['not', 'a', 'dict'])
            assert not kc.comms.comms and not kc._requests
    run(main())

def test_a_restart_a_sigkill_and_a_stop_end_every_comm_with_their_named_error(open_kernel):
    async def main():
        async with open_kernel(clients=2) as (km, kc, other):
            await ok(kc, ECHO)
            comm = await kc.comms.open('echo', timeout=10)
            closed = []
            async def on_close(c): closed.append(type(c.error))
            comm.on_close(on_close)
            await asyncio.wait_for(km.restart_kernel(), 60)
            assert comm.closed and isinstance(comm.error, KernelRestartedError) and not kc.comms.comms
            with pytest.raises(KernelRestartedError): [m async for m in comm]
            await asyncio.wait_for(kc.wait_for_ready(), 60)
            await ok(kc, ECHO)
            comm = await kc.comms.open('echo', timeout=10)
            stopped = await other.comms.open('echo', timeout=10)
            other.stop_channels()
            assert stopped.closed and isinstance(stopped.error, ClientClosedError)
            pid = int((await kc.execute('', user_expressions=dict(p='__import__("os").getpid()'), reply=True, timeout=10))['content']['user_expressions']['p']['data']['text/plain'])
            os.kill(pid, signal.SIGKILL)
            with pytest.raises((DeadKernelError, KernelRestartedError)): await asyncio.wait_for(comm.__anext__(), 30)
            await asyncio.sleep(0)
            assert closed==[KernelRestartedError] and not kc.comms.tasks
    run(main())

def test_a_client_that_never_asked_for_comms_routes_comm_messages_as_before(open_kernel):
    "Comm routing is off by default: nbclient's own widget handling sees the comm messages of its requests, as it always did."
    async def main():
        async with open_kernel() as (km, kc):
            r = await kc.execute("from comm import create_comm\nc = create_comm(target_name='t')\nc.send({'n': 1})\nc.close()", outputs=True, timeout=30)
            assert [m['msg_type'] for m in r.msgs if m['msg_type'].startswith('comm_')]==['comm_open', 'comm_msg', 'comm_close'] and kc._comms is None
    run(main())

def test_a_comm_nobody_reads_keeps_its_newest_messages_and_counts_the_rest(open_kernel):
    async def main():
        async with open_kernel() as (km, kc):
            kc.comms.maxsize = 50
            opened = asyncio.get_running_loop().create_future()
            kc.comms.register_target('flood', opened.set_result)
            # paced: a Jupyter Server drops iopub messages past its rate limit (1,000 a second), which is not what this tests
            await ok(kc, "import time\nfrom comm import create_comm\nf = create_comm(target_name='flood')\n"
                         "for i in range(200): f.send({'n': i}); time.sleep(0.003)\nf.close()")
            comm = await asyncio.wait_for(opened, 10)
            assert comm.dropped==150 and [m['content']['data']['n'] async for m in comm]==list(range(150, 200))
    run(main())
