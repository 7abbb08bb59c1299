"Regressions of the remote transport's adversarial review: hostile frames and answers, connections left behind, secrets in URLs, clean-up."
import asyncio, contextlib, json, logging, os, re, signal, statistics, subprocess, sys, time, uuid
from datetime import datetime, timezone
from urllib.parse import urlsplit
import pytest
from concurrent.futures import ThreadPoolExecutor
from jupyter_client.session import Session
from tornado.web import RequestHandler
from tornado.websocket import WebSocketHandler
from conkernelclient import ClientClosedError, DeadKernelError, KernelRestartedError, StartTimeoutError
from conkernelclient import remote
from conkernelclient.remote import V1, RemoteKernelManager, ServerError, v1_frame, v1_parts
from conftest import run, settled
from servers import Proxy as TCPProxy, fake_server, jupyter_server, remote_kernel, sockets_to, stop, until, until_no_sockets

pytestmark = pytest.mark.timeout(120)

async def connections(km):
    "How many websockets the server holds open to `km`'s kernel."
    return (await km.kernel_model())['connections']

# --- a scripted kernel websocket, to send what a real server never does

def _header(msg_type:str):
    "A kernel's header for a `msg_type` message."
    return dict(msg_id=uuid.uuid4().hex, msg_type=msg_type, session='fake-kernel', username='fake', version='5.3',
                date=datetime.now(timezone.utc).isoformat())

def _hostile(v1:bool, parent:dict):
    "Frames that decode but are ill-typed, or do not decode: each to be dropped and counted, none to cost the connection."
    pk = lambda d: json.dumps(d).encode()
    stream = dict(name='stdout', text='x')
    if v1: return [v1_frame('iopub', [pk(_header('status')), pk(parent), b'{}', pk(['busy'])]),  # a status whose content is a list
                   v1_frame('iopub', [pk(_header('stream')), pk({**parent, 'msg_id': [parent['msg_id']]}), b'{}', pk(stream)]),  # unhashable
                   v1_frame('bogus', [pk(_header('stream')), pk(parent), b'{}', pk(stream)]),  # no such channel
                   b'\x09\x00\x00\x00garbage']  # not a v1 frame at all
    legacy = lambda channel, header, parent, content: json.dumps(dict(channel=channel, header=header, parent_header=parent, metadata={}, content=content))
    return [legacy('iopub', _header('status'), parent, ['busy']),
            legacy('iopub', _header('stream'), {**parent, 'msg_id': [parent['msg_id']]}, stream),
            legacy(['shell'], _header('execute_reply'), parent, dict(status='ok', execution_count=1)),  # a channel that is not a str
            'not json']

class FakeKernel(WebSocketHandler):
    "A kernel websocket that answers each request (busy, reply, idle), with `_hostile` frames ahead of each execute_reply."
    def initialize(self, log:list): self.log, self.session = log, Session(session='fake-kernel')
    def select_subprotocol(self, subprotocols): return V1 if V1 in subprotocols else None
    def open(self, kernel_id): self.log.append('open')
    def on_close(self): self.log.append('close')

    def on_message(self, frame):
        v1 = self.selected_subprotocol==V1
        if v1: channel, parts = v1_parts(frame); header = json.loads(parts[0])
        else: m = json.loads(frame); channel, header = m['channel'], m['header']
        parent, kind = dict(header=header), header['msg_type'].replace('_request', '_reply')
        content = dict(status='ok', protocol_version='5.3', implementation='fake', language_info=dict(name='python'), banner='',
                       execution_count=1, user_expressions={})
        self.emit('iopub', self.session.msg('status', dict(execution_state='busy'), parent=parent))
        if kind=='execute_reply':
            for f in _hostile(v1, header): self.write_message(f, binary=isinstance(f, bytes))
        self.emit(channel, self.session.msg(kind, content, parent=parent))
        self.emit('iopub', self.session.msg('status', dict(execution_state='idle'), parent=parent))

    def emit(self, channel:str, msg:dict):
        parts = [self.session.pack(msg[k]) for k in ('header', 'parent_header', 'metadata', 'content')]
        if self.selected_subprotocol==V1: return self.write_message(v1_frame(channel, parts), binary=True)
        self.write_message(self.session.pack(dict(channel=channel, header=msg['header'], parent_header=msg['parent_header'],
                                                  metadata=msg['metadata'], content=msg['content'])).decode())

class KernelModel(RequestHandler):
    "The REST model of any kernel: alive and idle."
    def get(self, kernel_id): self.write(dict(id=kernel_id, name='fake', execution_state='idle', connections=1))

def fake_kernel(log:list): return [(r'/api/kernels/([^/]+)/channels', FakeKernel, dict(log=log)), (r'/api/kernels/([^/]+)', KernelModel)]

# --- finding 1 and 10: ill-typed frames

@pytest.mark.parametrize('protocol', ['v1', 'json'])
def test_ill_typed_frames_are_dropped_and_counted_as_they_come_and_the_reply_behind_them_arrives(protocol):
    async def main():
        log = []
        async with fake_server(fake_kernel(log)) as url:
            kc = RemoteKernelManager(url, token='t', kernel_id='k').client(protocol=protocol)
            await asyncio.wait_for(kc.start_channels(), 30)
            try:
                assert kc.bad_messages == 0
                r = await kc.execute('1', reply=True, timeout=10)  # four bad frames come just ahead of this reply
                assert r['content']['status'] == 'ok'
                assert kc.bad_messages == 4 and log == ['open']  # counted while connected, and the connection kept
                r = await kc.execute('2', reply=True, timeout=10)
                assert kc.bad_messages == 8 and log == ['open'] and settled(kc)
            finally: await kc.astop_channels()
    run(main())

def test_a_handler_that_raises_fails_the_client_loudly_instead_of_losing_the_connection(caplog):
    async def main():
        log = []
        async with fake_server(fake_kernel(log)) as url:
            kc = RemoteKernelManager(url, token='t', kernel_id='k').client()
            await asyncio.wait_for(kc.start_channels(), 30)
            def broken(msg, inbox): raise ZeroDivisionError('a bug in a handler')
            kc._handlers['shell'] = broken  # the transport's own table: a bug in routing, injected
            try:
                with pytest.raises(DeadKernelError, match='ZeroDivisionError.*a bug in conkernelclient'):
                    await kc.execute('1', reply=True, timeout=10)
                with pytest.raises(DeadKernelError, match='ZeroDivisionError'): kc.execute('2')
            finally: await kc.astop_channels()
            assert 'routing a message from the websocket failed' in caplog.text
    run(main())

# --- finding 2: connections left behind

class SlowUpgrade(WebSocketHandler):
    "A websocket endpoint that holds the upgrade (the 101) until `release` is set, and says when its client drops the TCP connection."
    def initialize(self, events:dict): self.events = events
    async def prepare(self):
        self.events['upgrading'].set()
        await self.events['release'].wait()
    def on_connection_close(self):
        self.events['dropped'].set()
        super().on_connection_close()

@pytest.mark.parametrize('how', ['astop_channels', 'start timeout'])
def test_a_client_stopped_mid_upgrade_leaves_no_connection_open(how):
    async def main():
        events = {k: asyncio.Event() for k in ('upgrading', 'release', 'dropped')}
        async with fake_server([(r'/api/kernels/([^/]+)/channels', SlowUpgrade, dict(events=events))]) as url:
            kc = RemoteKernelManager(url, token='t', kernel_id='k').client()
            start = asyncio.ensure_future(kc.start_channels(timeout=None if how=='astop_channels' else 1))
            try:
                await asyncio.wait_for(events['upgrading'].wait(), 10)  # the server has the upgrade request, and holds its answer
                if how=='astop_channels': await kc.astop_channels()
                with pytest.raises(StartTimeoutError if how=='start timeout' else ClientClosedError): await asyncio.wait_for(start, 10)
                # stopped, the client closes its connection at once, not when the 101 comes (to be upgraded and held by nobody)
                await asyncio.wait_for(events['dropped'].wait(), 5)
            finally: events['release'].set()
    run(main())

def test_clients_stopped_while_connecting_or_reconnecting_leave_no_connection_on_the_server(server):
    url, token = server
    async def main():
        km = RemoteKernelManager(url, token=token)
        await asyncio.wait_for(km.start_kernel(), 60)
        try:
            for t in (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1):  # start-ups timing out at every stage of the connect
                with contextlib.suppress(StartTimeoutError): await (await km.client().start_channels(timeout=t)).astop_channels()
            await until_no_sockets(url)
            kc = await asyncio.wait_for(km.client().start_channels(), 30)
            for _ in range(5):  # stopped while it reconnects
                kc._ws.conn.protocol.stream.close()
                await until(lambda: kc._ws is None, every=0)  # reconnecting: the connect needs I/O, so it is not done within a loop pass
                await asyncio.wait_for(kc.astop_channels(), 10)
                await until_no_sockets(url)
                kc = await asyncio.wait_for(km.client().start_channels(), 30)
            assert len(sockets_to(url)) == 1
            await kc.astop_channels()
            await until_no_sockets(url)
            # the server's own count: jupyter_server 2.21 counts the close of an upgrade aborted before it opened, never its open,
            # so aborted connects take it below zero; a connection left open would take it above
            assert await connections(km) <= 0
        finally: await km.shutdown_kernel()
    run(main())

# --- finding 3: packing at send time

def test_an_unserialisable_request_sent_while_reconnecting_fails_alone_in_its_callers_hands(server):
    url, token = server
    async def main():
        async with remote_kernel(url, token) as (km, kc):
            running = kc.execute('import time; time.sleep(0.5); print("ran across the reconnect")', outputs=True, timeout=30)
            kc._ws.conn.protocol.stream.close()  # the TCP connection drops
            await until(lambda: kc._ws is None, every=0)  # reconnecting: what is sent now waits in the backlog
            with pytest.raises(ValueError, match="Can't clean for JSON"): kc.shell_request('comm_info_request', target_name=object())
            with pytest.raises(ValueError, match='not UTF-8'): kc.execute('"\udc80"')
            sent = kc.execute('print("sent while reconnecting")', outputs=True, timeout=30)
            assert [o.text for o in (await sent).outputs] == ['sent while reconnecting\n']
            assert [o.text for o in (await running).outputs] == ['ran across the reconnect\n']
            assert settled(kc) and (await kc.kernel_info(reply=True, timeout=10))['content']['status'] == 'ok'
    run(main())

# --- finding 5: a remote kernel shut down at interpreter exit

EXIT_SCRIPT = '''
import os, sys
from conkernelclient.blocking import ConBlockingKernelManager
from conkernelclient.remote import RemoteKernelManager
km = ConBlockingKernelManager(RemoteKernelManager(sys.argv[1]))  # the token comes from $JUPYTER_TOKEN
km.start_kernel()
kc = km.client()
assert kc.execute('print("up")', outputs=True, timeout=60).outputs[0].text == 'up\\n'
print(km.akm.kernel_id, flush=True)
# no close: the interpreter exits, and the exit hook shuts the kernel down
'''

def test_a_remote_kernel_is_shut_down_when_the_interpreter_exits(server, tmp_path):
    url, token = server
    script = tmp_path/'exits.py'
    script.write_text(EXIT_SCRIPT)
    out = subprocess.run([sys.executable, str(script), url], env={**os.environ, 'JUPYTER_TOKEN': token}, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    kernel_id = out.stdout.strip()
    async def main(): return {k['id'] for k in await RemoteKernelManager(url, token=token).list_kernels()}
    assert kernel_id and kernel_id not in run(main()), out.stderr  # the exit hook's DELETE went out and was answered

# --- finding 8: answers that are not the Jupyter Server API's

class Proxy(RequestHandler):
    "What stands in front of a server: an HTML page, a redirect to a login page (with a secret in its query), or JSON of the wrong shape."
    def initialize(self, hits:list): self.hits = hits
    def get(self, kind, rest):
        self.hits.append((kind, rest))
        if kind=='html': return self.finish('<html><body>Sign in</body></html>')  # tornado says text/html
        if kind=='redirect': return self.redirect('/hub/login?next=%2Fapi%2Fkernels&token=s3cret')
        self.set_header('Content-Type', 'application/json')
        self.finish('[]' if kind=='list' else '{"id": 7}')
    post = get

def test_answers_that_are_not_json_are_server_errors_and_a_failing_rest_check_kills_no_client(server):
    url, token = server
    async def main():
        hits = []
        async with fake_server([(r'/(html|redirect|list|noid)(/.*)', Proxy, dict(hits=hits))]) as fake:
            with pytest.raises(ServerError, match=rf'GET /api/kernels: the server at {fake}/html answered HTTP 200 with text/html') as e:
                await RemoteKernelManager(fake+'/html', token='t').list_kernels()
            assert e.value.status == 200
            with pytest.raises(ServerError, match=r'redirected \(HTTP 302\) to /hub/login: a login page') as e:
                await RemoteKernelManager(fake+'/redirect', token='t').list_kernels()
            assert e.value.status == 302 and 's3cret' not in str(e.value)
            with pytest.raises(ServerError, match='JSON list, where the Jupyter Server API answers a dict'):
                await RemoteKernelManager(fake+'/list', token='t', kernel_id='k').kernel_model()
            with pytest.raises(ServerError, match='without an id'): await RemoteKernelManager(fake+'/noid', token='t').start_kernel()
            for kind, says in (('html', 'answered HTTP 200 where a websocket upgrade'), ('redirect', 'redirected')):
                with pytest.raises(ServerError, match=says):
                    await asyncio.wait_for(RemoteKernelManager(fake+'/'+kind, token='t', kernel_id='k').client().start_channels(), 30)
            # the REST check meets a proxy's page while the websocket stays connected: it proves nothing, and kills nothing
            async with remote_kernel(url, token, rest_interval=0.1, watch_interval=0.02) as (km, kc):
                running = kc.execute('import time; time.sleep(1); print("done")', outputs=True, timeout=30)
                await asyncio.sleep(0.1)
                km.url, before = fake+'/html', len(hits)
                assert [o.text for o in (await running).outputs] == ['done\n']
                assert len(hits)-before >= 3  # the checks asked the proxy, several times
                km.url = url
    run(main())

# --- finding 9: URLs that carry secrets

def test_urls_with_a_query_or_credentials_are_refused_and_no_secret_is_shown(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    for bad, says in [('http://127.0.0.1:8888/lab?token=s3cret', 'token=...'), ('http://127.0.0.1:8888/?token=s3cret', 'token=...'),
                      ('https://ada:s3cret@hub.example/user/ada/', 'credentials'), ('http://s3cret@hub.example/', 'credentials'),
                      ('ftp://ada:s3cret@host/', 'http(s) URL'), ('http://h/#s3cret', 'query'), ('http://h:s3cret/', 'valid URL')]:
        with pytest.raises(ValueError, match=re.escape(says)) as e: RemoteKernelManager(bad, token='t')
        assert 's3cret' not in str(e.value), e.value
    with pytest.raises(ValueError, match='printable ASCII') as e: RemoteKernelManager('http://h', token='s3cret\r\nX: y')
    assert 's3cret' not in str(e.value)
    km = RemoteKernelManager('http://127.0.0.1:9/', token='s3cret')
    with pytest.raises(ValueError, match=re.escape('token=...')): km.url = 'http://127.0.0.1:9/lab?token=s3cret'
    assert 's3cret' not in repr(km) and km.url == 'http://127.0.0.1:9'
    # a base path (JupyterHub's /user/<name>/) is the server's own, and works end to end
    proc, url, token = jupyter_server(tmp_path, '--ServerApp.base_url=/user/ada/')
    async def main():
        async with remote_kernel(url+'/user/ada/', token) as (km, kc):
            assert km.url == url+'/user/ada'
            assert (await kc.execute('print("hub")', outputs=True, timeout=30)).outputs[0].text == 'hub\n'
            with pytest.raises(ServerError, match=re.escape(f'the server at {url}/user/bob answered HTTP 404')):
                await RemoteKernelManager(url+'/user/bob', token=token).list_kernels()
    try: run(main())
    finally: stop(proc)
    assert 's3cret' not in caplog.text and token not in caplog.text

# --- finding 11: a cancelled start

def test_a_start_cancelled_by_its_caller_leaves_no_kernel_on_the_server(server):
    url, token = server
    async def main():
        watcher = RemoteKernelManager(url, token=token)
        before = {k['id'] for k in await watcher.list_kernels()}
        async def made():
            "The kernels the server lists beyond those it had; asked again on HTTP 500 (jupyter_server 2.21 fails a listing that meets a kernel it has not finished recording)."
            while True:
                try: return {k['id'] for k in await watcher.list_kernels()} - before
                except ServerError as e:
                    if e.status != 500: raise
                await asyncio.sleep(0.01)
        async def gone(): return not await made()
        for how in ('cancel', 'wait_for', 'no shutdown'):
            km = RemoteKernelManager(url, token=token)
            if how=='wait_for':
                with pytest.raises(TimeoutError): await asyncio.wait_for(km.start_kernel(), 0.01)
            else:
                start = asyncio.ensure_future(km.start_kernel())
                await asyncio.sleep(0)  # the POST is on its way
                start.cancel()
            try:
                await until(made, 30)  # the server starts the kernel anyway (it is listed from its launch until its deletion ends)
                if how=='no shutdown': await until(gone, 30)  # nobody waits: the clean-up deletes it once the server says which it made
                else: await asyncio.wait_for(km.shutdown_kernel(), 60)  # which waits for the clean-up
            except TimeoutError: pytest.fail(f'{how}: timed out; the server lists {await made()} beyond what it had')
            assert km.kernel_id is None and await asyncio.wait_for(gone(), 10), (how, await made())
    run(main())

# --- finding 17: shutting down a kernel the server is restarting

def test_shutting_down_a_kernel_the_server_is_restarting(server):
    url, token = server
    async def main():
        km = RemoteKernelManager(url, token=token)
        await asyncio.wait_for(km.start_kernel(), 60)
        kc = await asyncio.wait_for(km.client().start_channels(), 30)
        try:
            r = await kc.execute('', user_expressions=dict(pid='__import__("os").getpid()'), reply=True, timeout=10)
            pending = kc.execute('import time; time.sleep(60)', reply=True, timeout=60)
            await asyncio.sleep(0.3)
            os.kill(int(r['content']['user_expressions']['pid']['data']['text/plain']), signal.SIGKILL)
            with pytest.raises(KernelRestartedError): await asyncio.wait_for(pending, 30)
            # the server announced `restarting`, and restarts the kernel now: jupyter_server 2.21 fails a DELETE meanwhile (HTTP 500)
            await asyncio.wait_for(km.shutdown_kernel(), 90)
            assert km.kernel_id not in {k['id'] for k in await km.list_kernels()}
        finally: await kc.astop_channels()
    run(main())

# --- requests a killed kernel never read: the server's socket hands them to the new kernel

def test_requests_sent_to_a_killed_kernel_before_the_server_noticed_run_in_the_new_one_and_are_not_failed(server, tmp_path):
    "The server's ZMQ socket keeps what the dead kernel never read for the kernel it restarts: such requests end with their true outcome."
    url, token = server
    async def main():
        async with remote_kernel(url, token) as (km, kc):
            r = await kc.execute('', user_expressions=dict(pid='__import__("os").getpid()'), reply=True, timeout=10)
            old = int(r['content']['user_expressions']['pid']['data']['text/plain'])
            started = kc.execute('import time; time.sleep(60)', reply=True, timeout=60)
            await until(lambda: started.request.state=='running')
            os.kill(old, signal.SIGKILL)
            await asyncio.sleep(0.3)  # sent at once, a request can still be lost with the connection; sent now, the server's socket keeps it
            code = lambda i: f'import os; open({str(tmp_path)!r}+"/{i}", "w").write(str(os.getpid())); print(os.getpid(), input("{i}?"))'
            # bounds for a hang, not claims: the server notices, restarts the kernel and runs these; slow on a loaded machine
            after = [kc.execute(code(i), on_input=lambda prompt, pw: f'answer-{prompt}', outputs=True, timeout=60) for i in range(3)]
            assert not started.done()  # the server has not noticed yet: these went to the dead kernel's address
            with pytest.raises(KernelRestartedError): await asyncio.wait_for(started, 30)  # what the dead kernel had started is lost
            ran = 0
            for i, res in enumerate(await asyncio.wait_for(asyncio.gather(*after, return_exceptions=True), 70)):
                marker = tmp_path/str(i)
                if isinstance(res, KernelRestartedError): assert not marker.exists(), f'request {i} failed, but ran in {marker.read_text()}'
                else:
                    assert res.status=='ok' and int(marker.read_text()) != old, (res.reply, marker.read_text())  # input() answered, in the new kernel
                    # its output, unless the server's subscription to the new kernel's iopub had yet to connect (then it is lost upstream)
                    assert ''.join(o.get('text', '') for o in res.outputs).split() in ([], [marker.read_text(), f'answer-{i}?'])
                    ran += 1
            assert ran  # the new kernel ran what the dead one never read (all three, in every run here)
            assert (await kc.execute('1', reply=True, timeout=10))['content']['status'] == 'ok'  # and no input() of theirs holds it
    run(main(), 110)

# --- quick ACKs: on by default, and what they are for

DELACK_MIN = 0.04  # Linux's TCP_DELACK_MIN: HZ/25 seconds

def test_quick_acks_are_on_by_default_and_cut_the_round_trip_by_the_delayed_ack_timer(server):
    url, token = server
    async def main():
        async with remote_kernel(url, token) as (km, default):
            nagle = await asyncio.wait_for(km.client(quickack=False).start_channels(), 30)
            try:
                times = {default: [], nagle: []}
                for _ in range(6):  # alternating runs, so the machine's load falls on both alike
                    for kc in times:
                        for _ in range(5):  # back to back: a request sent soon after a reply puts Linux's TCP in its delayed-ACK mode
                            t0 = time.perf_counter()
                            await kc.execute('', reply=True, timeout=30)
                            times[kc].append(time.perf_counter()-t0)
                fast, slow = statistics.median(times[default]), statistics.median(times[nagle])
                print(f'\nmedian round trip: {fast*1e3:.1f} ms with the default client, {slow*1e3:.1f} ms with quickack=False')
                # delayed ACKs hold each reply for Linux's minimum delayed-ACK time (TCP_DELACK_MIN, 40 ms); quick ACKs remove the wait.
                # Load slows both alike, so the gap is what binds; the ratio says it is the larger part of the round trip.
                assert slow-fast > DELACK_MIN/2 and slow > 2*fast, (fast, slow)
            finally: await nagle.astop_channels()
    run(main())

HOLD = 3  # seconds the proxy holds the connection of a REST check before letting it through

def test_a_stop_closes_the_connection_of_a_rest_check_still_in_flight(server):
    "A REST check in flight when the client stops is aborted with it, not left open until the server answers (here a proxy holds it)."
    url, token = server
    proxy = TCPProxy(urlsplit(url).port)
    async def main():
        km = RemoteKernelManager(proxy.url, token=token)
        await km.start_kernel()
        try:
            kc = km.client(); kc.rest_interval = 0.2
            await kc.start_channels()
            pending = kc.execute('import time; time.sleep(30)', reply=True, timeout=60)  # pending: the REST checks run
            proxy.delay_next(HOLD)
            await until(lambda: proxy.held, 10)  # the next check waits in the proxy
            t = time.monotonic()
            await kc.astop_channels()
            await until(lambda: not sockets_to(proxy.url), HOLD)
            took = time.monotonic()-t
            print(f'\na REST check held by a slow server: its connection closed {took:.2f} s after the stop (held for {HOLD} s)')
            assert took < HOLD/4 and proxy.held  # closed by the stop, while the proxy still held it
            with pytest.raises(ClientClosedError): await asyncio.wait_for(pending, 5)
        finally: await km.shutdown_kernel()
    try: run(main())
    finally: proxy.close()

@pytest.mark.parametrize('told_by', ['manager', 'kernel'])
def test_a_stopped_clients_janitor_ends_with_the_kernel(server, monkeypatch, told_by):
    "A stopped client whose request may still ask for input keeps its routers (the janitor) only while the kernel lives: a shutdown ends them, told by the manager or by the kernel's own broadcast, each on its own."
    url, token = server
    async def main():
        async with remote_kernel(url, token) as (km, kc):
            if told_by == 'kernel': monkeypatch.setattr(remote, '_release_janitors', lambda km: None)
            else: kc._shutting_down = lambda msg: None
            pending = kc.execute('import time; time.sleep(2); input("?")', allow_stdin=True, reply=True, timeout=30)
            await kc.wait_state(lambda s: None in s.running, timeout=10)
            await kc.astop_channels()
            with pytest.raises(ClientClosedError): await asyncio.wait_for(pending, 5)
            assert kc._janitor and kc in km._janitors  # its request may still ask
            await km.shutdown_kernel()
            assert not kc._janitor and kc not in km._janitors
            await asyncio.wait(kc._vital, timeout=5)
            assert all(t.done() for t in kc._vital)
    run(main())

def test_a_client_stopped_while_its_loop_is_idle_closes_its_websocket_at_once(server):
    "`stop_channels` is a plain call: made between two runs of the client's loop (none running, none current), it closes the connection there and then."
    url, token = server
    def in_a_thread_of_its_own():  # a new thread has no current event loop, as the main thread after `asyncio.run`
        loop = asyncio.new_event_loop()
        aw = lambda coro: loop.run_until_complete(asyncio.wait_for(coro, 60))
        km = RemoteKernelManager(url, token=token)
        aw(km.start_kernel())
        try:
            async def started(): return await km.client().start_channels()
            kc = aw(started())
            async def sent(): return asyncio.ensure_future(kc.execute('import time; time.sleep(30)', reply=True, timeout=60))
            pending = aw(sent())
            aw(asyncio.sleep(0.1))
            assert len(sockets_to(url)) == 1
            kc.stop_channels()  # the loop is idle
            assert not sockets_to(url)  # closed by the call, not by the loop's next run
            with pytest.raises(ClientClosedError): aw(pending)
        finally:
            aw(km.shutdown_kernel())
            loop.close()
    with ThreadPoolExecutor(1) as ex: ex.submit(in_a_thread_of_its_own).result(90)
