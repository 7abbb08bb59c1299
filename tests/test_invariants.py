"Regression tests for the adversarial paths of issue 'Invariants': one test per finding, against real kernels."
import asyncio, os, queue, signal, subprocess, sys, threading, time, uuid
import pytest
from conkernelclient.local import ConHeartbeat
from jupyter_client.session import Session
from conkernelclient import (ClientClosedError, ClientLoopError, ConKernelClient, DeadKernelError, InputError,
                             KernelRestartedError)
from conkernelclient.tinykernel import tiny_manager
from conftest import kernel, run, settled
from servers import until
from test_requests import running

pytestmark = pytest.mark.timeout(120)
stuck_tiny = lambda **kw: tiny_manager(interrupt_mode='message', **kw)  # `%input` then waits for good: an interrupt_request can't end it

async def clean(kc):
    "Once the kernel is done with what it had (an abandoned request, a failed one and what stop_on_error aborted behind it), it answers again, and the client's registry is empty."
    await kc.until_idle(timeout=30)
    assert (await kc.execute('1', reply=True, timeout=10))['content']['status'] == 'ok'
    assert settled(kc)

@pytest.mark.parametrize('bad', [float('nan'), float('inf'), 10**400, -1])
def test_1_2_non_finite_or_huge_timeouts_are_refused_before_anything_is_filed(bad):
    async def main():
        async with kernel() as (km, kc):
            for call in (lambda: kc.execute('1', reply=True, timeout=bad), lambda: kc.stream('1', timeout=bad).__anext__(),
                         lambda: kc.get_iopub_msg(timeout=bad), lambda: kc.create_subshell(timeout=bad),
                         lambda: kc.wait_for_ready(timeout=bad)):
                with pytest.raises(ValueError, match='finite'):
                    res = call()
                    if asyncio.iscoroutine(res) or isinstance(res, asyncio.Future): await res
            await asyncio.wait_for(asyncio.sleep(0.05), 1)  # the loop's timers still fire
            await clean(kc)
            slow = kc.execute('import time; time.sleep(1)', reply=True)
            kc.stop_channels()
            with pytest.raises(ClientClosedError): await asyncio.wait_for(slow, 5)
    run(main())

@pytest.mark.parametrize('how', ['stop', 'kill', 'restart'])
def test_3_a_refused_input_still_ends_at_once_if_the_client_stops_or_the_kernel_goes(how):
    "While the kernel is interrupted for a failed on_input (the grace), the request must still see every teardown."
    async def main():
        async with kernel(make=stuck_tiny) as (km, kc):
            kc.interrupt_grace = 30
            asked = asyncio.Event()
            def refuse(prompt, password): asked.set(); raise PermissionError('no')
            fut = kc.execute('%input', on_input=refuse, reply=True, timeout=60)
            await asyncio.wait_for(asked.wait(), 10)  # refused: the interrupt goes out, the kernel ignores it, the grace runs
            await asyncio.sleep(0)
            assert not fut.done()
            t0 = time.monotonic()
            if how == 'stop': kc.stop_channels(); want = ClientClosedError
            elif how == 'kill': os.kill(km.provisioner.process.pid, signal.SIGKILL); want = DeadKernelError
            else: await km.restart_kernel(now=True); want = KernelRestartedError
            with pytest.raises(want): await asyncio.wait_for(fut, 5)
            assert time.monotonic()-t0 < 5 and settled(kc)
    run(main())

def test_4_requests_sent_during_a_restart_fail_instead_of_vanishing():
    async def main():
        async with kernel() as (km, kc):
            restart = asyncio.ensure_future(km.restart_kernel())
            while not km.restarting: await asyncio.sleep(0.001)
            with pytest.raises(KernelRestartedError, match='being restarted'): kc.execute('1', reply=True)
            with pytest.raises(KernelRestartedError): kc.execute('1')  # fire-and-forget too: it would be lost
            await asyncio.wait_for(restart, 60)
            await clean(kc)
    run(main())

class PatientHeartbeat(ConHeartbeat):
    "A heartbeat that waits 30 s for a beat: a restart cannot pass for a death, so only the mechanism under test can tell."
    time_to_dead = 30.0

async def attached(km, **traits):
    "A client attached to `km`'s kernel by its connection file alone, as another process would be (no manager), with `traits` set."
    att = ConKernelClient(connection_file=km.connection_file, hb_channel_class=PatientHeartbeat, **traits); att.load_connection_file()
    await att.start_channels()
    assert att.parent is None
    return att

async def restart_under(att, km, code:str, python:bool=True):
    "Restart `km`'s kernel while `att`'s request `code` runs; seconds from the start and from the end of the restart until that request failed."
    pending = await running(att, code, python=python)
    t0 = time.monotonic()
    await km.restart_kernel(now=True)
    t1 = time.monotonic()
    with pytest.raises(KernelRestartedError): await asyncio.wait_for(pending, 20)
    return time.monotonic()-t0, time.monotonic()-t1

def test_5_an_attached_client_learns_of_a_restart_from_the_new_kernels_welcome():
    "ipykernel 7 welcomes each iopub subscriber: the new kernel's welcome (or `starting` status) fences, with no probe to help."
    async def main():
        async with kernel(clients=0) as (km,):
            # ipykernel greets only the first subscriber to reconnect (its XPUB passes one subscription per topic): here, the only one
            att = await attached(km, probe_interval=60)  # no probe within the bound: only the new kernel's announcement can tell
            began, ended = await restart_under(att, km, 'import time; time.sleep(30)')
            print(f'\nattached client, told by the new kernel\'s welcome: pending request failed {began:.2f} s after the restart began '
                  f'({ended:.2f} s after restart_kernel returned)')
            assert ended < 5*att.watch_interval, ended  # the welcome comes as the new kernel's iopub connects, long before any probe
            await clean(att)  # and it carries on with the new kernel
            await att.astop_channels()
    run(main())

def test_5_an_attached_client_learns_of_a_restart_from_its_probe_on_control():
    "The tiny kernel announces nothing: after `probe_interval` of silence a control kernel_info_request finds the new kernel's session."
    async def main():
        async with kernel(make=tiny_manager) as (km, kc):
            att = await attached(km, probe_interval=1)  # the old kernel is killed sooner: the probe reaches the new one
            began, ended = await restart_under(att, km, '%sleep 30', python=False)
            print(f'\nattached client, told by its probe: pending request failed {began:.2f} s after the restart began '
                  f'({ended:.2f} s after restart_kernel returned)')
            assert ended < att.probe_interval + 5*att.watch_interval, ended  # silence noticed at a watcher tick, then one round trip
            await clean(att)
            await clean(kc)
            await att.astop_channels()
    run(main())

@pytest.mark.parametrize('how', ['timeout', 'cancel', 'stream'])
def test_6_an_abandoned_request_never_leaves_the_kernel_waiting_in_input(how):
    async def main():
        async with kernel() as (km, kc):
            code, mid = 'import time; time.sleep(0.6); x = input("late? ")', uuid.uuid4().hex
            answer = lambda prompt, password: 'never'
            if how == 'timeout':
                with pytest.raises(TimeoutError): await kc.execute(code, on_input=answer, reply=True, timeout=0.2, msg_id=mid)
            elif how == 'cancel':
                t = asyncio.ensure_future(kc.execute(code, on_input=answer, reply=True, msg_id=mid))
                await asyncio.sleep(0.2); t.cancel()
                with pytest.raises(asyncio.CancelledError): await t
            else:
                async for msg in kc.stream(code, on_input=answer, msg_id=mid): break  # leave after the first message
            # the kernel asks for input, for a request nobody waits for: the client must interrupt it, so that the request ends
            while not ((m := await kc.get_iopub_msg(timeout=10))['parent_header'].get('msg_id') == mid
                       and m['content'].get('execution_state') == 'idle'): pass
            await clean(kc)  # the kernel answers again
            with pytest.raises(queue.Empty): await kc.get_stdin_msg(timeout=0.1)  # and the request did not land in the inbox
    run(main())

@pytest.mark.parametrize('exc', [asyncio.CancelledError, KeyboardInterrupt, SystemExit])
def test_7_an_on_input_that_raises_a_base_exception_fails_its_request_only(exc):
    async def main():
        async with kernel() as (km, kc):
            def raiser(prompt, password): raise exc()
            with pytest.raises(InputError, match=exc.__name__): await kc.execute('input("?")', on_input=raiser, reply=True, timeout=30)
            await clean(kc)
    run(main())

def test_7_on_input_must_answer_with_a_str():
    async def main():
        async with kernel() as (km, kc):
            for val in (None, b'xy', 3):
                with pytest.raises(TypeError, match='on_input must return a str'):
                    await kc.execute('input("?")', on_input=lambda p, pw: val, reply=True, timeout=30)
            await clean(kc)
    run(main())

def test_8_a_client_refuses_calls_from_another_event_loop():
    holder = {}
    async def start():
        holder['km'] = km = tiny_manager(session=Session(key=b'tiny'))
        await km.start_kernel()
        holder['kc'] = await km.client().start_channels()
    async def elsewhere():
        kc = holder['kc']
        with pytest.raises(ClientLoopError, match='event loop that started it'): kc.execute('', reply=True)
        with pytest.raises(ClientLoopError): await kc.is_alive()
        with pytest.raises(ClientLoopError): await kc.get_iopub_msg(timeout=0.1)
        with pytest.raises(ClientLoopError): await kc.wait_for_ready(timeout=1)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(start(), 60))
        run(elsewhere())  # a later asyncio.run: another loop
        errors = []
        th = threading.Thread(target=lambda: errors.append(asyncio.run(elsewhere())))
        th.start(); th.join(30)
        assert errors == [None]
        async def back_home():
            kc = holder['kc']
            assert (await kc.execute('', reply=True, timeout=10))['content']['status'] == 'ok'
            await kc.astop_channels(); await holder['km'].shutdown_kernel(now=True)
        loop.run_until_complete(asyncio.wait_for(back_home(), 60))
    finally: loop.close()

def test_9_a_duplicate_msg_id_is_refused_whatever_the_request():
    async def main():
        async with kernel() as (km, kc):
            ex = kc.execute('import time; time.sleep(0.3); 7', reply=True, timeout=10, msg_id='dup')
            with pytest.raises(ValueError, match='already pending'): kc.control_request('kernel_info_request', reply=False, msg_id='dup')
            with pytest.raises(ValueError, match='already pending'): kc.execute('8', msg_id='dup')
            r = await ex
            assert r['msg_type'] == 'execute_reply' and r['content']['status'] == 'ok'
            await clean(kc)
    run(main())

def test_12_stopping_during_start_raises_client_closed_not_cancelled():
    async def main():
        async with kernel(clients=0) as (km,):
            outcomes = set()
            for delay in [0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5]:
                kc = km.client()
                starting = asyncio.ensure_future(_ready(kc))
                await asyncio.sleep(delay)
                kc.stop_channels()
                try: await asyncio.wait_for(starting, 30); outcomes.add('ready')
                except ClientClosedError: outcomes.add('closed')
            assert 'closed' in outcomes  # CancelledError or anything else would have escaped above
            for step in ('_stdin_ready',):  # and exactly in the last step, which waits on a socket
                kc = km.client()
                last = getattr(kc, step)
                async def stop_then(*args, last=last, kc=kc):
                    kc.stop_channels()  # as if another task stopped the client just as this step began
                    return await last(*args)
                setattr(kc, step, stop_then)
                with pytest.raises(ClientClosedError): await asyncio.wait_for(_ready(kc), 30)
    run(main())

async def _ready(kc): return await kc.start_channels()

def test_13_wait_for_ready_counts_the_iopub_messages_it_discards():
    async def main():
        async with kernel() as (km, kc):
            kc.execute('print("unread")')
            await asyncio.sleep(0.5)
            before = kc.dropped['iopub']
            await kc.wait_for_ready(timeout=10)
            assert kc.dropped['iopub'] >= before+3  # busy, execute_input, stream, idle: discarded, but counted
    run(main())

def test_stream_refuses_reply_and_outputs_options_clearly():
    async def main():
        async with kernel(make=tiny_manager) as (km, kc):
            with pytest.raises(TypeError, match='takes no reply, outputs'): await kc.stream('', outputs=True).__anext__()
            assert settled(kc)
    run(main())

def test_6_a_caller_that_gives_up_while_on_input_is_still_side_frees_the_kernel():
    "Found by the fuzz suite's design: the kernel asked, on_input hangs, the caller times out; the kernel must not stay in input()."
    async def main():
        async with kernel() as (km, kc):
            async def hang(prompt, password): await asyncio.Event().wait()
            with pytest.raises(TimeoutError): await kc.execute('x = input("?")', on_input=hang, reply=True, timeout=0.5)
            await clean(kc)
            assert not kc._side
    run(main())

def test_a_client_stopped_while_its_request_may_ask_for_input_does_not_strand_the_kernel():
    "Found by the fuzz suite: the kernel would ask the stopped client's socket for input, and wait for good."
    async def main():
        async with kernel(clients=0) as (km,):
            kc = await km.client().start_channels()
            def refuse(prompt, password): raise PermissionError('no')
            kc.execute('import time; time.sleep(0.6); print(input("?"))', on_input=refuse, outputs=True, timeout=0.05)
            await asyncio.sleep(0)
            kc.stop_channels()
            other = await asyncio.wait_for(km.client().start_channels(), 30)  # its kernel_info must not queue behind an input() for good
            await clean(other)
            await other.astop_channels()
    run(main())

def test_5_requests_an_attached_client_sends_to_the_new_kernel_are_not_failed_as_old():
    "The new kernel may announce itself after it has taken new requests: the client fences instead of failing them all."
    async def main():
        async with kernel() as (km, kc):
            att = await attached(km)  # a restart slower than the default heartbeat's 1 s would pass for a death: not what this tests
            for _ in range(3):
                await km.restart_kernel(now=True)
                r = await att.execute('1', reply=True, timeout=20)  # sent before the new kernel's welcome reached us, or after
                assert r['content']['status'] == 'ok'
            await att.astop_channels()
    run(main())

SLOW_IPYKERNEL = 'import sys, time; time.sleep(float(sys.argv.pop(1))); from ipykernel.kernelapp import launch_new_instance; launch_new_instance()'

def test_5_a_restart_slower_than_an_attached_clients_heartbeat_allows_is_a_death_to_it():
    "Attached by connection file, only the heartbeat tells a death from a restart: silent longer than its `time_to_dead`, the kernel is dead to it."
    async def main():
        async with kernel(clients=0) as (km,):
            hasty = ConKernelClient(connection_file=km.connection_file); hasty.load_connection_file()  # the default heartbeat: 1 s
            await hasty.start_channels()
            patient = await attached(km)  # waits 30 s for a beat
            lost = [hasty.execute('import time; time.sleep(30)', reply=True, timeout=60)]
            await until(lambda: lost[0].request.state=='running')
            lost.append(patient.execute('import time; time.sleep(30)', reply=True, timeout=60))  # after: two clients' requests may swap
            t0 = time.monotonic()
            km.provisioner.process.kill()  # and someone restarts it on the same ports, 3 s later
            new = subprocess.Popen([sys.executable, '-c', SLOW_IPYKERNEL, '3', '-f', km.connection_file])
            try:
                with pytest.raises(DeadKernelError, match='the kernel died'): await asyncio.wait_for(lost[0], 30)
                dead_after = time.monotonic()-t0
                with pytest.raises(KernelRestartedError): await asyncio.wait_for(lost[1], 30)
                assert dead_after < hasty.hb_channel.time_to_dead + 1.5 < 3, dead_after  # declared dead before the new kernel could answer
                assert (await patient.execute('1', reply=True, timeout=20))['content']['status'] == 'ok'  # the patient one carries on
                with pytest.raises(DeadKernelError): hasty.execute('1', reply=True)  # the hasty one is stopped for good: attach a new one
            finally:
                await patient.astop_channels(); await hasty.astop_channels()
                new.kill(); new.wait()
    run(main())

def test_running_out_of_file_descriptors_fails_at_once_not_by_a_silent_timeout(tmp_path):
    "In a child process (the limit is process-wide), start tiny kernels and clients until the descriptors run out."
    script = tmp_path/'fds.py'
    script.write_text('''
import asyncio, resource, time
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
from jupyter_client.session import Session
from conkernelclient.tinykernel import tiny_manager
async def main():
    kms, kcs = [], []
    try:
        for i in range(60):
            km = tiny_manager(session=Session(key=b'k')); await km.start_kernel(); kms.append(km)
            t0 = time.monotonic()
            try: kcs.append(await km.client().start_channels(timeout=20))
            except OSError as e: return print('refused', i, round(time.monotonic()-t0, 2), e)
    finally:
        for kc in kcs: await kc.astop_channels()
        for km in kms: await km.shutdown_kernel(now=True)
asyncio.run(main())
''')
    import subprocess, sys
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=110)
    assert p.stdout.startswith('refused') and 'too many open files' in p.stdout and 'ulimit' in p.stdout, (p.stdout, p.stderr[-2000:])
    assert float(p.stdout.split()[2]) < 1  # at once, not after the start-up timeout
