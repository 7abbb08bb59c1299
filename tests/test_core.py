"Stress, races and faults for the reply router, against real ipykernels."
import asyncio, os, queue, signal, subprocess, sys, time
import pytest
from conkernelclient import ClientClosedError, ConChannel, DeadKernelError
from conkernelclient.cli import vanilla_client
from conftest import kernel, run, settled
from test_faults import WATCH, Made
from test_requests import running

pytestmark = pytest.mark.timeout(120)

def test_200_concurrent_replies_each_routed_to_its_caller():
    async def main():
        async with kernel() as (km, kc):
            t0 = time.monotonic()
            futs = [kc.execute(f'{i}*3', reply=True, timeout=60, msg_id=f'r{i}') for i in range(200)]
            replies = await asyncio.gather(*futs)
            secs = time.monotonic()-t0
            print(f'\n200 concurrent replies in {secs:.2f} s ({200/secs:.0f}/s)')
            assert [r['parent_header']['msg_id'] for r in replies] == [f'r{i}' for i in range(200)]
            counts = [r['content']['execution_count'] for r in replies]
            assert counts == sorted(counts) and len(set(counts)) == 200
            assert settled(kc)
    run(main())

def test_each_caller_gets_its_own_value():
    "Replies carry user_expressions, so each caller can check that the reply is for its own code."
    async def main():
        async with kernel() as (km, kc):
            futs = [kc.execute(f'v = {i}', user_expressions=dict(v='v'), reply=True, timeout=60) for i in range(50)]
            for i, r in enumerate(await asyncio.gather(*reversed(futs))):
                assert r['content']['user_expressions']['v']['data']['text/plain'] == str(49-i)
    run(main())

def test_fire_and_forget_interleaved_with_awaited():
    async def main():
        async with kernel() as (km, kc):
            sent, futs = [], []
            for i in range(40):
                if i % 2: futs.append(kc.execute(f'{i}', reply=True, timeout=30))
                else: sent.append(kc.execute(f'{i}'))
            replies = await asyncio.gather(*futs)
            assert all(r['content']['status'] == 'ok' for r in replies)
            got = [(await kc.get_shell_msg(timeout=10))['parent_header']['msg_id'] for _ in sent]
            assert got == sent
            with pytest.raises(queue.Empty): await kc.get_shell_msg(timeout=0.2)
    run(main())

def test_timeout_among_successes_leaves_nothing_behind():
    async def main():
        async with kernel() as (km, kc):
            before = kc.execute('1', reply=True, timeout=10)
            slow = kc.execute('import time; time.sleep(1)', reply=True, timeout=0.2)
            after = [kc.execute(f'{i}', reply=True, timeout=10) for i in range(5)]
            with pytest.raises(TimeoutError): await slow
            assert (await before)['content']['status'] == 'ok'
            assert all(r['content']['status'] == 'ok' for r in await asyncio.gather(*after))
            assert settled(kc)
            with pytest.raises(queue.Empty): await kc.get_shell_msg(timeout=0.3)  # the late reply was dropped
    run(main())

def test_cancelled_waiter_is_removed_and_client_keeps_working():
    async def main():
        async with kernel() as (km, kc):
            async def wait(code): return await kc.execute(code, reply=True, timeout=10)
            tasks = [asyncio.create_task(wait('import time; time.sleep(0.3)')) for _ in range(5)]
            await asyncio.sleep(0.05)
            for t in tasks[:3]: t.cancel()
            res = await asyncio.gather(*tasks, return_exceptions=True)
            assert [type(r).__name__ for r in res[:3]] == ['CancelledError']*3
            assert all(r['content']['status'] == 'ok' for r in res[3:])
            await asyncio.sleep(0)
            assert settled(kc)
            assert (await kc.execute('2', reply=True, timeout=5))['content']['status'] == 'ok'
    run(main())

def test_stop_channels_fails_20_pending_at_once():
    async def main():
        async with kernel() as (km, kc):
            futs = [kc.execute('import time; time.sleep(0.5)', reply=True) for _ in range(20)]
            await asyncio.sleep(0.1)
            t0 = time.monotonic()
            tasks = list(kc._vital)
            kc.stop_channels()
            res = await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), 2)
            assert time.monotonic()-t0 < 1
            assert {type(r) for r in res} == {ClientClosedError}
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2)
            assert all(t.done() for t in tasks)
            with pytest.raises(ClientClosedError, match='stopped'): kc.execute('1')
            with pytest.raises(ClientClosedError): kc.execute('1', reply=True)
    run(main())

def test_sigkill_fails_20_pending_promptly():
    async def main():
        async with kernel() as (km, kc):
            futs = [await running(kc, 'import time; time.sleep(30)'), *[kc.execute('import time; time.sleep(0.5)', reply=True) for _ in range(19)]]
            os.kill(km.provisioner.process.pid, signal.SIGKILL)
            t0 = time.monotonic()
            res = await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), 5)
            secs = time.monotonic()-t0
            print(f'\nSIGKILL with 20 pending: all failed after {secs:.2f} s')
            assert {type(r) for r in res} == {DeadKernelError} and secs < 3*WATCH  # at once (pidfd), or at the watcher's next tick
            with pytest.raises(DeadKernelError, match='died'): kc.execute('1')
    run(main())

def test_five_clients_on_one_kernel():
    async def main():
        async with kernel(clients=5) as (km, *kcs):
            futs = [(i, kc.execute(f'{i}', reply=True, timeout=30)) for _ in range(10) for i, kc in enumerate(kcs)]
            for i, fut in futs:
                r = await fut
                assert r['content']['status'] == 'ok' and r['header']['session'] != kcs[i].session.session
                assert r['parent_header']['session'] == kcs[i].session.session
    run(main())

def test_start_stop_cycles_leave_no_fds_tasks_or_threads():
    "Counts only what the cycles made: fds, threads and tasks that did not exist before them."
    async def main():
        async with kernel() as (km, kc):
            await kc.astop_channels()
            made = Made()
            for _ in range(20):
                kc = await km.client().start_channels()
                assert (await kc.execute('1', reply=True, timeout=10))['content']['status'] == 'ok'
                await kc.astop_channels()
            assert made.left() == dict(fds=[], threads=[], tasks=[])
    run(main())

def test_every_inherited_reply_request_concurrent_with_executes():
    async def main():
        async with kernel() as (km, kc):
            futs = dict(kernel_info=kc.kernel_info(reply=True, timeout=20), complete=kc.complete('pri', reply=True, timeout=20),
                        inspect=kc.inspect('print', reply=True, timeout=20), history=kc.history(hist_access_type='tail', n=2, reply=True, timeout=20),
                        is_complete=kc.is_complete('x = [', reply=True, timeout=20), comm_info=kc.comm_info(reply=True, timeout=20))
            execs = [kc.execute('import time; time.sleep(0.02)', reply=True, timeout=20) for _ in range(10)]
            replies = dict(zip(futs, await asyncio.gather(*futs.values())))
            for name, r in replies.items(): assert r['msg_type'] == f'{name}_reply', name
            assert 'print' in replies['complete']['content']['matches']
            assert replies['inspect']['content']['found']
            assert replies['is_complete']['content']['status'] == 'incomplete'
            assert all(r['content']['status'] == 'ok' for r in await asyncio.gather(*execs))
            # the shutdown request goes through the control router
            r = await kc.shutdown(reply=True, timeout=20)
            assert r['msg_type'] == 'shutdown_reply'
    run(main())

def test_execute_interactive_claims_its_reply():
    async def main():
        async with kernel() as (km, kc):
            others = [kc.execute('1', reply=True, timeout=20) for _ in range(5)]
            r = await kc.execute_interactive('x = 1', timeout=20)
            assert r['content']['status'] == 'ok'
            assert all(o['content']['status'] == 'ok' for o in await asyncio.gather(*others))
    run(main())

def test_parked_receive_wakes_after_send():
    """A receive parked on the shell socket must wake for replies that arrive while the loop is busy.
    `Session.send` through the synchronous shadow socket consumes the edge-triggered wake-up (shown first, as the control);
    `ConChannel.send` (what the client uses) does not."""
    async def trial(km, fixed):
        vc = vanilla_client(km)
        vc.start_channels(iopub=False, stdin=False, hb=False, control=False)
        sock, got = vc.shell_channel.socket, []
        send = ConChannel(sock, vc.session).send if fixed else vc.shell_channel.send
        async def reader():
            while True: got.append(await sock.recv_multipart())
        task = asyncio.create_task(reader())
        await asyncio.sleep(0.05)  # park the reader
        send(vc.session.msg('kernel_info_request', {}))
        time.sleep(0.5)  # the loop is busy while the reply arrives
        send(vc.session.msg('kernel_info_request', {}))  # a sync send processes the socket's commands
        await asyncio.sleep(1)
        task.cancel()
        vc.stop_channels()
        return len(got)
    async def main():
        async with kernel() as (km, kc):
            assert await trial(km, fixed=False) < 2, 'the hazard did not reproduce, so this test proves nothing'
            assert await trial(km, fixed=True) == 2
            # and through the client's own router
            f1 = kc.kernel_info(reply=True, timeout=3); time.sleep(0.5)
            f2 = kc.kernel_info(reply=True, timeout=3)
            await asyncio.wait_for(asyncio.gather(f1, f2), 3)
    run(main())

def test_bad_arguments_raise_before_sending():
    async def main():
        async with kernel() as (km, kc):
            for bad, exc, text in [(dict(code=b'1'), TypeError, 'code must be a str'), (dict(code=None), TypeError, 'code'),
                                   (dict(code='1', timeout=-1), ValueError, '>= 0'), (dict(code='1', timeout='5'), TypeError, 'timeout'),
                                   (dict(code='1', msg_id=3), TypeError, 'msg_id'), (dict(code='1', subshell_id=1), TypeError, 'subshell_id'),
                                   (dict(code='1', user_expressions=[1]), TypeError, 'user_expressions')]:
                with pytest.raises(exc, match=text): kc.execute(**bad, reply=True)
                assert settled(kc)
            with pytest.raises(TypeError, match='code'): kc.complete(5, reply=True)
            f = kc.execute('import time; time.sleep(0.2)', reply=True, msg_id='dup', timeout=10)
            with pytest.raises(ValueError, match='already pending'): kc.execute('1', reply=True, msg_id='dup')
            assert (await f)['content']['status'] == 'ok'
            with pytest.raises(queue.Empty): await kc.get_shell_msg(timeout=0.3)  # nothing was sent for the refused calls
    run(main())

def test_requests_before_start_raise_clearly():
    async def main():
        async with kernel() as (km, kc):
            fresh = km.client()
            with pytest.raises(ClientClosedError, match='start_channels'): fresh.execute('1')
            with pytest.raises(ClientClosedError, match='start_channels'): await fresh.get_shell_msg(timeout=0.1)
    run(main())

def test_socket_closed_under_client_fails_pending_with_dead_kernel_error():
    async def main():
        async with kernel() as (km, kc):
            futs = [kc.execute('import time; time.sleep(0.3)', reply=True) for _ in range(5)]
            kc.shell_channel.socket.close(linger=0)
            res = await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), 3)
            assert {type(r) for r in res} == {DeadKernelError}
            with pytest.raises(DeadKernelError, match='closed'): kc.execute('1')
    run(main())

def test_router_death_fails_pending_and_later_calls():
    async def main():
        async with kernel() as (km, kc):
            def broken(frames): raise KeyError('injected fault')
            kc._decode = broken  # the routers call it for every message
            futs = [kc.execute('1', reply=True) for _ in range(5)]
            res = await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), 5)
            assert {type(r) for r in res} == {DeadKernelError}
            assert 'injected fault' in str(res[0])
            with pytest.raises(DeadKernelError, match='injected fault'): kc.execute('1')
    run(main())

def test_unread_replies_are_bounded_and_counted():
    async def main():
        async with kernel() as (km, kc):
            await kc.astop_channels()
            kc = km.client(inbox_size=5); await kc.start_channels()
            mids = [kc.execute(f'{i}') for i in range(12)]
            await kc.execute('0', reply=True, timeout=20)  # ordered after all the others
            assert kc._inboxes['shell'].dropped == 7
            got = [(await kc.get_shell_msg(timeout=1))['parent_header']['msg_id'] for _ in range(5)]
            assert got == mids[-5:]
            await kc.astop_channels()
    run(main())

def test_import_changes_no_global_state():
    "In a fresh interpreter (this one imported the package long ago): importing every module leaves the classes it builds on as they were."
    script = """
import zmq, zmq.asyncio, jupyter_client, jupyter_client.session, jupyter_client.channels, jupyter_client.client, jupyter_client.manager
classes = [zmq.Socket, zmq.asyncio.Socket, zmq.Context, jupyter_client.session.Session, jupyter_client.channels.HBChannel,
           jupyter_client.client.KernelClient, jupyter_client.AsyncKernelClient, jupyter_client.AsyncKernelManager]
snap = lambda: [(c.__qualname__, dict(vars(c))) for c in classes]
before = snap()
import conkernelclient, conkernelclient.blocking, conkernelclient.cli, conkernelclient.remote, conkernelclient.subshells, conkernelclient.tinykernel
changed = [name for (name, b), (_, a) in zip(before, snap()) if a != b]
print('changed:', changed)
"""
    p = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == 'changed: []\n', p.stdout+p.stderr

def test_readiness_uses_iopub_welcome_and_works_without_it():
    async def main():
        async with kernel() as (km, kc):
            assert kc._welcome.done() and kc._welcome.result()['msg_type'] == 'iopub_welcome'  # ipykernel 7 sends one
            with pytest.raises(queue.Empty): await kc.get_iopub_msg(timeout=0.2)  # no start-up chatter left behind
        from conkernelclient.tinykernel import tiny_manager
        async with kernel(make=tiny_manager) as (km, kc):  # a kernel without welcomes: readiness by the idle status alone
            assert not kc._welcome.done()
            assert (await kc.execute('', reply=True, timeout=5))['content']['status'] == 'ok'
    run(main())
