"Comms routed by `comm_id`, over each transport (ZMQ, the websocket's v1 framing and its legacy JSON protocol), on ipykernel's own comm manager."
import asyncio, json, os, signal, threading, time
import nbformat, pytest
from nbclient import NotebookClient
from conkernelclient import ClientClosedError, ConKernelManager, DeadKernelError, KernelRestartedError
from conkernelclient.comms import WIDGET_STATE, CommError
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
    "Run `code`, and wait for its idle status: what it published on iopub (its comms' messages) has come by then."
    r = await kc.execute(code, outputs=True, timeout=30)
    assert r.reply['content']['status']=='ok', r.reply['content']

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

WIDGET_CELLS = ['import ipywidgets as W', "s = W.IntSlider(value=3, description='n')\ns",
                "img = W.Image(value=b'\\x89PNG not really', format='png')\nimg", 's.value = 5\nb = W.BoundedIntText(value=1, max=10)']

def same_ids(doc:dict):
    "`doc` with its model ids (keys, and `IPY_MODEL_` references) renamed in order of creation, so two runs compare."
    text = json.dumps(doc)
    for i, mid in enumerate(doc['state']): text = text.replace(mid, f'model{i}')
    return json.loads(text)

def test_the_widget_state_of_a_run_is_what_nbclient_stores_for_the_same_notebook(open_kernel):
    async def main():
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in WIDGET_CELLS])
        await NotebookClient(nb, kernel_manager_class=ConKernelManager, timeout=60).async_execute()
        stored = nb.metadata.widgets[WIDGET_STATE]
        async with open_kernel() as (km, kc):
            w = kc.widgets
            for code in WIDGET_CELLS: await ok(kc, code)
            ours = w.state()
        assert len(stored['state'])==len(ours['state'])>=5 and any(m.get('buffers') for m in ours['state'].values())
        assert same_ids(ours)==same_ids(stored)
    run(main())

async def round_trip(w, mid:str, state:dict, **kw):
    "Seconds from setting `state` on model `mid` to the kernel's echo of it (after its observers ran), and the echo."
    comm = w.comms.comms[mid]
    comm.msgs.clear()
    t = time.monotonic()
    await w.set(mid, state, timeout=30, **kw)
    echo = await asyncio.wait_for(comm.__anext__(), 30)
    return time.monotonic()-t, echo

def test_a_widget_set_from_the_client_runs_the_kernels_observer_and_the_kernels_word_comes_back(open_kernel):
    async def main():
        async with open_kernel() as (km, kc):
            w = kc.widgets
            await ok(kc, 'import ipywidgets as W\nb = W.BoundedIntText(value=1, max=10)\nseen = []\nb.observe(lambda ch: seen.append(ch["new"]), "value")')
            mid, = w.ids('BoundedIntTextModel')
            secs, echo = await round_trip(w, mid, {'value': 7})
            assert echo['content']['data']['state']=={'value': 7} and w.models[mid]['value']==7
            assert (await kc.execute('print(b.value, seen)', outputs=True, timeout=10)).outputs[0].text=='7 [7]\n'
            await w.set(mid, {'value': 50}, timeout=10)  # past its max: the kernel clamps it, and says so
            await ok(kc, 'pass')  # whatever the kernel sent for it has come (iopub is in order, before this idle)
            assert w.models[mid]['value']==10, w.models[mid]
            assert (await kc.execute('print(b.value, seen)', outputs=True, timeout=10)).outputs[0].text=='10 [7, 10]\n'
            print(f'\nwidget round trip on the main shell (set, observer, echo): {secs*1000:.1f} ms')
    run(main())

def test_a_widget_made_on_a_subshell_is_operated_there_while_a_3_s_cell_runs_on_the_main_shell(open_kernel):
    async def main():
        async with open_kernel() as (km, kc):
            w = kc.widgets
            sid = await kc.create_subshell()
            try:
                await ok(kc, 'import time, ipywidgets as W')
                r = await kc.execute('s = W.IntSlider()\nwhen = []\ns.observe(lambda ch: when.append(time.monotonic()), "value")',
                                     outputs=True, timeout=30, subshell_id=sid)  # to its idle: the model's comm_open has come by then
                assert r.reply['content']['status']=='ok'
                mid, = w.ids('IntSliderModel')
                cell = kc.execute('t0 = time.monotonic(); time.sleep(3); t1 = time.monotonic()', reply=True, timeout=30)
                await kc.wait_state(lambda s: None in s.running, timeout=10)
                secs, echo = await round_trip(w, mid, {'value': 5}, subshell_id=sid)
                assert not cell.done() and echo['content']['data']['state']=={'value': 5}  # during the cell
                await cell
                assert (await kc.execute("print(when[0] < t1)", outputs=True, timeout=10)).outputs[0].text=="True\n"  # its observer ran before the cell ended
                print(f'\nwidget round trip through a subshell while a 3 s cell runs on the main shell: {secs*1000:.1f} ms')
            finally: await kc.delete_subshell(sid)
    run(main())

def test_comms_and_widgets_from_threads():
    "The blocking facade: threads open comms, send and read; handlers and callbacks run off the loop, in order; a widget set from a thread."
    from concurrent.futures import ThreadPoolExecutor
    from conkernelclient import ConBlockingKernelManager
    with ConBlockingKernelManager() as km:
        km.start_kernel()
        kc = km.client()
        assert kc.execute(ECHO, reply=True, timeout=60)['content']['status']=='ok'
        def job(j):
            comm = kc.comms.open('echo', timeout=10)
            for i in range(20): comm.send({'j': j, 'i': i}, buffers=[bytes([j, i])])
            got = [(m['content']['data']['i'], bytes(m['buffers'][0])) for m in (comm.next(10) for _ in range(20))]
            comm.close()
            return got
        with ThreadPoolExecutor(4) as ex: results = list(ex.map(job, range(4)))
        assert results==[[(i, bytes([j, i])) for i in range(20)] for j in range(4)]
        seen, threads, done = [], set(), threading.Event()
        def take(comm):
            threads.add(threading.current_thread().name)
            comm.on_msg(lambda m: (seen.append(m['content']['data']['n']), threads.add(threading.current_thread().name), m['content']['data']['n']==49 and done.set()))
        kc.comms.register_target('counter', take)
        assert kc.execute("import time\nfrom comm import create_comm\nc = create_comm(target_name='counter')\ntime.sleep(0.5)\n"
                          "for i in range(50): c.send({'n': i})", reply=True, timeout=30)['content']['status']=='ok'
        assert done.wait(30) and seen==list(range(50)) and all(t.startswith('conkernelclient-callback') for t in threads), (seen, threads)
        w = kc.widgets
        kc.execute('import ipywidgets as W\ns = W.IntSlider(value=1)', reply=True, timeout=30)
        assert kc.execute('pass', outputs=True, timeout=10).reply['content']['status']=='ok'  # its idle: the models have come
        mid, = w.ids('IntSliderModel')
        w.set(mid, {'value': 9}, timeout=10)
        assert w.model(mid)['value']==9 and kc.execute('print(s.value)', outputs=True, timeout=10).outputs[0].text=='9\n'
        assert w.state()['state'][mid]['state']['value']==9

def test_widgets_made_before_the_client_asked_are_learnt_with_sync_and_can_be_set(open_kernel):
    async def main():
        async with open_kernel() as (km, kc):
            assert (await kc.widgets.sync(timeout=10))['state']=={} and not kc.comms.comms  # ipywidgets not even imported: no widget, no error
        async with open_kernel() as (km, kc):
            await ok(kc, 'import ipywidgets as W\nold = W.IntSlider(value=4)\nimg = W.Image(value=b"bytes!")\nseen = []\nold.observe(lambda ch: seen.append(ch["new"]), "value")')
            w = kc.widgets
            assert w.ids('IntSliderModel')==[]  # made before: unknown
            doc = await w.sync(timeout=10)
            (mid,), (img,) = w.ids('IntSliderModel'), w.ids('ImageModel')
            assert doc['state'][mid]['state']['value']==4 and len(doc['state'])>=5
            assert doc['state'][img]['buffers']==[dict(data='Ynl0ZXMh', encoding='base64', path=['value'])]  # b'bytes!'
            await w.set(mid, {'value': 6}, timeout=10)
            assert (await kc.execute('print(old.value, seen)', outputs=True, timeout=10)).outputs[0].text=='6 [6]\n'
            assert not [c for c in kc.comms.comms.values() if c.target_name=='jupyter.widget.control']  # the control comm was closed
    run(main())

def test_ill_typed_comm_messages_and_failing_callbacks_do_not_stop_the_routing():
    "Whatever a kernel sends on iopub and whatever a callback raises (a `KeyboardInterrupt` too), the router goes on: the next message arrives."
    async def main():
        from conftest import kernel
        async with kernel() as (km, kc):
            opened = asyncio.get_running_loop().create_future()
            kc.comms.register_target('t', opened.set_result)
            await ok(kc, "k = get_ipython().kernel\nsend = lambda kind, content: k.session.send(k.iopub_socket, kind, content, parent=k.get_parent())\n"
                         "send('comm_open', {'comm_id': 'a', 'target_name': ['unhashable']})\nsend('comm_msg', {'comm_id': 7, 'data': {}})\n"
                         "send('comm_open', {'comm_id': 'b', 'target_name': 't', 'data': {}})")
            comm = await asyncio.wait_for(opened, 10)
            def boom(m): raise KeyboardInterrupt('a callback gone wrong')
            comm.on_msg(boom)
            await ok(kc, "send('comm_msg', {'comm_id': 'b', 'data': {'n': 1}})\nsend('comm_msg', {'comm_id': 'b', 'data': {'n': 2}})")
            assert [(await comm.__anext__())['content']['data']['n'] for _ in range(2)]==[1, 2] and kc._state=='ready'
            with pytest.raises(ValueError, match='maxsize'): kc.comms.maxsize = 0
    run(main())
