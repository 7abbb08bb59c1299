"Per-request outputs, stdin and control requests under concurrency, against real ipykernels."
import asyncio, gc, queue, time, uuid
import pytest, zmq
from conkernelclient import DeadKernelError
from conkernelclient.tinykernel import tiny_manager
from conftest import kernel, run, settled

pytestmark = pytest.mark.timeout(120)

def rss_mb():
    "This process's resident memory, in MB."
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])/1024

def _shows_running(msg:dict, mid:str, python:bool):
    "Whether iopub message `msg` shows that request `mid` runs: its printed marker (Python), or its busy status (the tiny kernel)."
    if msg['parent_header'].get('msg_id') != mid: return False
    if python: return msg['msg_type'] == 'stream' and f'started {mid}' in msg['content']['text']
    return msg['msg_type'] == 'status' and msg['content']['execution_state'] == 'busy'  # single-threaded: busy means at work on it

async def running(kc, code:str, timeout:float=60, python:bool=True, **kw):
    "Send `code` with reply=True (in Python, after a line printing a marker); its reply future, once the kernel is running it."
    mid = uuid.uuid4().hex
    fut = kc.execute(f'print("started {mid}", flush=True)\n{code}' if python else code, reply=True, timeout=timeout, msg_id=mid, **kw)
    while not _shows_running(await kc.get_iopub_msg(timeout=timeout), mid, python): pass  # nobody's outputs: they reach get_iopub_msg
    return fut

def test_ten_concurrent_requests_each_get_only_their_own_output_in_order():
    code = 'import time\nfor i in range(20):\n    print("{m}", i, flush=True)\n    time.sleep(0.005)'
    async def main():
        async with kernel() as (km, kc):
            futs = [kc.execute(code.format(m=f'marker{k}'), outputs=True, timeout=60) for k in range(10)]
            for k, res in enumerate(await asyncio.gather(*futs)):
                assert res.status == 'ok'
                text = ''.join(o.text for o in res.outputs if o.output_type == 'stream')
                assert text == ''.join(f'marker{k} {i}\n' for i in range(20))
                assert {m['parent_header']['msg_id'] for m in res.msgs} == {res.reply['parent_header']['msg_id']}
            print('\n10 concurrent requests x 20 flushed prints: every request got exactly its own 20 lines, in order')
    run(main())

def test_streams_from_concurrent_requests_never_cross():
    async def main():
        async with kernel() as (km, kc):
            async def collect(tag):
                return [m async for m in kc.stream(f'for i in range(5): print("{tag}", i, flush=True)', timeout=30)]
            a, b = await asyncio.gather(collect('A'), collect('B'))
            for tag, msgs in (('A', a), ('B', b)):
                texts = [m['content']['text'] for m in msgs if m['msg_type'] == 'stream']
                assert ''.join(texts) == ''.join(f'{tag} {i}\n' for i in range(5))
                assert msgs[0]['msg_type'] == 'status' and {m['msg_type'] for m in msgs} >= {'execute_input', 'execute_reply'}
            assert settled(kc)
    run(main())

def test_display_updates_clear_output_errors_and_rich_displays():
    async def main():
        async with kernel() as (km, kc):
            first = await kc.execute('from IPython.display import display, HTML, update_display\n'
                                     'display(HTML("<b>v1</b>"), display_id="d1")\nupdate_display(HTML("<b>v2</b>"), display_id="d1")',
                                     outputs=True, timeout=10)
            assert [o.output_type for o in first.outputs] == ['display_data'] and first.outputs[0].data['text/html'] == '<b>v2</b>'
            later = await kc.execute('update_display(HTML("<b>v3</b>"), display_id="d1")', outputs=True, timeout=10)
            assert later.outputs == [] and any(m['msg_type'] == 'update_display_data' for m in later.msgs)
            assert first.outputs[0].data['text/html'] == '<b>v2</b>'  # another request's update does not cross over
            cleared = await kc.execute('from IPython.display import clear_output\nprint("gone")\nclear_output()\nprint("kept")', outputs=True, timeout=10)
            assert [o.text for o in cleared.outputs] == ['kept\n']
            waited = await kc.execute('print("old")\nclear_output(wait=True)\nprint("new")', outputs=True, timeout=10)
            assert [o.text for o in waited.outputs] == ['new\n']
            err = await kc.execute('def f(): raise ValueError("boom")\nf()', outputs=True, timeout=10)
            assert err.status == 'error' and err.outputs[-1].ename == 'ValueError' and any('boom' in l for l in err.outputs[-1].traceback)
            rich = await kc.execute('class R:\n    def _repr_html_(self): return "<p>rich</p>"\nR()', outputs=True, timeout=10)
            assert rich.outputs[0].output_type == 'execute_result' and rich.outputs[0].data['text/html'] == '<p>rich</p>'
    run(main())

def test_two_concurrent_inputs_each_get_their_own_answer():
    async def main():
        async with kernel() as (km, kc):
            async def slow_answer(prompt, password):
                await asyncio.sleep(0.2)
                return f'{prompt}-slow'
            def quick_answer(prompt, password): return f'{prompt}-quick{"-secret" if password else ""}'
            a = kc.execute('a = input("first")\nprint(a)', on_input=slow_answer, outputs=True, timeout=20)
            b = kc.execute('import getpass\nb = getpass.getpass("second")\nprint(b)', on_input=quick_answer, outputs=True, timeout=20)
            ra, rb = await asyncio.gather(a, b)
            assert ra.outputs[0].text == 'first-slow\n' and rb.outputs[0].text == 'second-quick-secret\n'
    run(main())

def test_failing_input_callback_interrupts_and_fails_the_request_with_its_error():
    async def main():
        async with kernel() as (km, kc):
            def refuse(prompt, password): raise PermissionError('refused')
            t0 = time.monotonic()
            with pytest.raises(PermissionError, match='refused'): await kc.execute('input("?")', on_input=refuse, outputs=True, timeout=20)
            assert time.monotonic()-t0 < 10
            assert settled(kc)
            r = await kc.execute('"still alive"', outputs=True, timeout=10)
            assert r.status == 'ok' and r.outputs[0].data['text/plain'] == "'still alive'"
    run(main())

def test_interrupt_with_a_long_request_and_two_queued():
    async def main():
        async with kernel() as (km, kc):
            long = await running(kc, 'import time; time.sleep(30)')
            queued = [kc.execute('1+1', reply=True, timeout=60), kc.execute('2+2', reply=True, timeout=60)]
            r = await kc.interrupt(timeout=10)
            assert r['msg_type'] == 'interrupt_reply'
            res = await asyncio.wait_for(asyncio.gather(long, *queued), 20)  # well before the 30 s sleep would end by itself
            assert res[0]['content']['status'] == 'error' and res[0]['content']['ename'] == 'KeyboardInterrupt'
            assert {q['content']['status'] for q in res[1:]} <= {'ok', 'aborted'}
            await asyncio.sleep(0.5)  # let ipykernel leave its abort state after the error
            assert (await kc.execute('3', reply=True, timeout=10))['content']['status'] == 'ok'
    run(main())

def test_generic_shell_and_control_requests():
    async def main():
        async with kernel() as (km, kc):
            futs = [kc.control_request('kernel_info_request', timeout=10), kc.shell_request('comm_info_request', target_name='x', timeout=10),
                    kc.control_request('usage_request', timeout=10), kc.execute('import time; time.sleep(0.2)', reply=True, timeout=10)]
            ki, ci, usage, ex = await asyncio.gather(*futs)
            assert (ki['msg_type'], ci['msg_type'], usage['msg_type'], ex['msg_type']) == ('kernel_info_reply', 'comm_info_reply', 'usage_reply', 'execute_reply')
            with pytest.raises(TypeError, match='msg_type'): kc.control_request(5)
    run(main())

def test_fire_and_forget_iopub_is_unchanged_for_get_iopub_msg():
    async def main():
        async with kernel() as (km, kc):
            mid = kc.execute('1+1')
            kinds = []
            while True:
                try: msg = await kc.get_iopub_msg(timeout=0.5)
                except queue.Empty: break
                assert msg['parent_header']['msg_id'] == mid
                kinds.append(msg['msg_type'])
            assert kinds == ['status', 'execute_input', 'execute_result', 'status']
    run(main())

def test_a_lost_idle_status_is_bounded_by_the_timeout():
    "A kernel that publishes no idle status (the tiny kernel's `%noidle`, as an iopub high-water mark would drop it)."
    async def main():
        async with kernel(make=tiny_manager) as (km, kc):
            timeout = 1
            t0 = time.monotonic()
            with pytest.raises(TimeoutError, match='idle'): await kc.execute('%noidle', outputs=True, timeout=timeout)
            secs = time.monotonic()-t0
            assert timeout <= secs < 1.5*timeout, secs  # at its own timeout (the reply came at once), not later
            assert settled(kc)
            res = await kc.execute('%print 1', outputs=True, timeout=5)
            assert res.status == 'ok' and [o.text for o in res.outputs] == ['0\n']  # the next request is whole
    run(main())

def test_breaking_out_of_a_stream_leaves_nothing_behind():
    async def main():
        async with kernel() as (km, kc):
            async for msg in kc.stream('for i in range(3): print(i, flush=True)', timeout=10):
                if msg['msg_type'] == 'stream': break
            await asyncio.sleep(0.05)  # the abandoned generator is closed by asyncio's finalizer hook within a few loop turns
            assert settled(kc)
            assert (await kc.execute('1', reply=True, timeout=10))['content']['status'] == 'ok'
    run(main())

def test_dead_kernel_fails_output_waiters_and_streams():
    async def main():
        async with kernel() as (km, kc):
            res = kc.execute('import time; time.sleep(5)', outputs=True)
            async def consume(): return [m async for m in kc.stream('import time; time.sleep(5)')]
            streaming = asyncio.create_task(consume())
            await asyncio.sleep(0.3)
            await km.shutdown_kernel(now=True)
            with pytest.raises(DeadKernelError): await asyncio.wait_for(res, 5)
            with pytest.raises(DeadKernelError): await asyncio.wait_for(streaming, 5)
    run(main())

@pytest.mark.timeout(180)
def test_iopub_flood_stays_within_its_bound():
    async def main():
        async with kernel() as (km, kc):
            flooded = await km.client(iopub_inbox_size=1000).start_channels()
            gc.collect(); before = rss_mb()
            r = await flooded.execute('for i in range(100_000): print(i, flush=True)', reply=True, timeout=150)
            assert r['content']['status'] == 'ok'
            await asyncio.sleep(1)  # let the last messages of the flood arrive
            gc.collect(); after = rss_mb()
            kept, dropped = len(flooded._inboxes['iopub'].msgs), flooded.dropped['iopub']
            print(f'\niopub flood of 100,000 prints: kept {kept}, dropped {dropped}, RSS {before:.0f} -> {after:.0f} MB')
            assert kept == 1000 and dropped > 90_000
            assert after - before < 60  # unbounded, 100k messages would hold well over 100 MB
            await flooded.astop_channels()
    run(main(), timeout=170)

def test_input_right_after_start_is_never_lost():
    "stdin is a ROUTER on the kernel side: an input_request sent before our stdin connection completes would be dropped."
    async def main():
        for _ in range(5):
            async with kernel() as (km, kc):
                assert kc.stdin_channel.socket.get(zmq.IMMEDIATE) == 1 and kc.shell_channel.socket.get(zmq.IMMEDIATE) == 0
                r = await kc.execute('input("?")', on_input=lambda prompt, password: 'x', outputs=True, timeout=10)
                assert r.outputs[0].data['text/plain'] == "'x'"
    run(main())

def test_a_lost_idle_status_is_found_lost_by_a_fence_and_the_request_ends_with_its_reply():
    "The reply came, the idle never will (the tiny kernel's `%noidle`): after `probe_interval`, a `kernel_info` on control whose idle comes proves it lost."
    async def main():
        async with kernel(make=tiny_manager) as (km, kc):
            t0 = time.monotonic()
            res = await kc.execute('%print 2\n%noidle', outputs=True, timeout=30)
            secs = time.monotonic()-t0
            assert res.status=='ok' and [o.text for o in res.outputs]==['0\n1\n'], res
            assert kc.probe_interval <= secs < 2*kc.probe_interval + 5*kc.watch_interval, secs  # the watcher asked once the reply had waited
            assert settled(kc) and not kc._no_idle  # nothing of it is held
    run(main())
