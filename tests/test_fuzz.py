"""A stateful fuzz suite: hypothesis drives random interleavings of requests and faults against real kernels, over ZMQ and over a
Jupyter Server's websocket, and checks the client's invariants after every step. CI runs a few examples; `tests/fuzz_long.py`
runs it for as long as you like, with seeds."""
import asyncio, os, shutil, signal, subprocess, sys, threading, time
import pytest
from hypothesis import HealthCheck, Phase, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from jupyter_client.session import Session
from conkernelclient import (ClientClosedError, ConKernelManager, DeadKernelError, InputError, KernelReplyError, KernelRestartedError,
                             NoReplyError, RemoteKernelManager, RequestCancelledError, RequestTimeoutError, Result, ServerError)
from conkernelclient.tinykernel import tiny_manager
from conftest import open_fds, pending, settled
from servers import RestartableServer, sockets_to

WATCH = 0.2  # the client's `watch_interval`
SLACK = 5*WATCH  # seconds a request may end past its own timeout, or past a fault, on a loaded 2-core machine
NAMED = (TimeoutError, ClientClosedError, DeadKernelError, KernelRestartedError, InputError, RequestCancelledError, NoReplyError)
KINDS = ['reply', 'outputs', 'stream', 'input_ok', 'input_raise', 'input_hang', 'control', 'dup', 'subshell', 'detach', 'interrupt', 'handle']

class Sent:
    "One request the machine sent: what it expects back, and how and when it ended."
    def __init__(self, kind, mid, marker, timeout, t0):
        self.kind,self.mid,self.marker,self.timeout,self.t0 = kind,mid,marker,timeout,t0
        self.task,self.ended,self.outcome,self.handle = None,None,None,None
        self.cancelled_by_us = self.never_runs = self.interrupted_by_us = False

    @property
    def bounded(self): return self.timeout is not None and self.kind not in ('detach', 'handle')  # ends by its own timeout

class KernelClientMachine(RuleBasedStateMachine):
    "Requests and faults on one kernel and client; subclasses pick the kernel and transport."
    dialect, counter, faults = None, None, ('stop_client', 'restart', 'sigkill')

    def __init__(self):
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.loop_errors, self.sent, self.n, self.seen, self.explicit = [], [], 0, set(), []
        self.loop.set_exception_handler(lambda loop, ctx: self.loop_errors.append(ctx))
        self.fds, self.threads = open_fds(), threading.active_count()
        self.kc = self.km = self.restarting_at = None
        self.run(self.start_kernel())
        if self.counter: open(self.counter, 'a').write('.')

    def run(self, coro, timeout:float=60): return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))
    def now(self): return self.loop.time()

    async def start_kernel(self):
        self.km = self.manager()
        await self.km.start_kernel()
        await self.start_client()

    async def start_client(self):
        kc = self.km.client()
        kc.watch_interval = WATCH
        route = kc._on_iopub  # a spy on every parent the kernel ever speaks of, to prove a cancelled request never ran
        def on_iopub(msg, inbox):
            self.seen.add(msg['parent_header'].get('msg_id'))
            if msg['msg_type']=='status' and msg['content'].get('execution_state')=='restarting': self.restarting_at = self.now()  # a server's news
            route(msg, inbox)
        kc._on_iopub = on_iopub  # before the start, which hands the routers their handlers
        self.kc = await kc.start_channels(timeout=60)
        self.sid = await kc.create_subshell(timeout=10) if kc.supports('kernel subshells') else None

    # ---- requests
    @rule(batch=st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from([None, 0.05, 0.3, 2, 10]), st.sampled_from([0, 0.02, 0.2, 0.6])),
                         min_size=1, max_size=3))
    def send(self, batch):
        for kind, timeout, dur in batch: self.send_one(kind, timeout, dur)
        self.step(0)

    def send_one(self, kind, timeout, dur):
        if kind == 'input_hang' and timeout is None: timeout = 0.5  # a caller that waits for ever on a callback that never answers
        if kind in ('detach', 'interrupt') and timeout is None: timeout = 0.05
        if kind == 'subshell' and self.sid is None: kind = 'reply'
        self.n += 1
        s = Sent(kind, f'fuzz-{self.n}', 1000+self.n, timeout, self.now())
        if kind == 'dup':
            live = [x for x in self.sent if x.ended is None and x.kind not in ('dup', 'control')]
            if live and pending(self.kc, live[-1].mid):
                with pytest.raises(ValueError, match='already pending'): self.run(self.call_soon(lambda: self.kc.execute('1', msg_id=live[-1].mid)))
                return
            kind = s.kind = 'reply'
        self.run(self.call_soon(lambda: self.sent.append(s) or setattr(s, 'task', self.loop.create_task(self.await_request(s, self.request(s, dur))))))

    def request(self, s, dur):
        "Send `s` now (as the caller does, synchronously) and return what to await."
        kc, code = self.kc, self.dialect(s.kind, dur, s.marker)
        opts = dict(timeout=s.timeout, msg_id=s.mid)
        marked = dict(user_expressions=dict(m=str(s.marker)))
        if s.kind == 'reply': return kc.execute(code, reply=True, **marked, **opts)
        if s.kind == 'subshell': return kc.execute(code, reply=True, subshell_id=self.sid, **marked, **opts)
        if s.kind in ('outputs', 'detach', 'interrupt'): return kc.execute(code, outputs=True, on_timeout=dict(outputs='leave').get(s.kind, s.kind), **opts)
        if s.kind == 'handle':
            s.handle = kc.submit(code, msg_id=s.mid)
            return s.handle.wait()
        if s.kind == 'control': return kc.control_request('kernel_info_request', **opts)
        if s.kind == 'stream': return kc.stream(code, **opts)
        answer = dict(input_ok=lambda p, pw: f'ans{s.marker}', input_raise=_refuse, input_hang=_hang)[s.kind]
        return kc.execute(code, on_input=answer, outputs=True, **opts)

    async def await_request(self, s, req):
        "Await `req` (a future, a handle's wait, or a stream to drain); a detached request is followed to its end. Record the outcome."
        try:
            if hasattr(req, '__aiter__'): s.outcome = [m async for m in req]
            else:
                try: s.outcome = await req
                except RequestTimeoutError as e:
                    if s.kind != 'detach': raise
                    s.handle = e.request
                    s.outcome = await e.request.wait()
        except BaseException as e: s.outcome = e
        finally: s.ended = self.now()

    # ---- callers, handles and faults
    @rule(i=st.integers(0, 20))
    def cancel(self, i):
        "Cancel a caller's wait (a handle's wait too: the request goes on)."
        live = [s for s in self.sent if s.ended is None and s.handle is None]
        if live:
            s = live[i % len(live)]
            s.cancelled_by_us = True
            s.task.cancel()
        self.step(0)
        if live and s.kind == 'detach' and pending(self.kc, s.mid): s.handle = self.kc.request(s.mid)  # a cancel detaches it too: it goes on, as a handle

    @rule(i=st.integers(0, 20))
    def cancel_handle(self, i):
        "Cancel a request through its handle: held, it must never run; running on the main shell, it is interrupted."
        live = [s for s in self.sent if s.handle is not None and not s.handle.done()]
        if live:
            s = live[i % len(live)]
            was = s.handle.state
            if self.run(s.handle.cancel()):
                s.cancelled_by_us = s.interrupted_by_us = True
                if was == 'queued': s.never_runs = True
        self.step(0)

    @rule(i=st.integers(0, 20), d=st.sampled_from([0, 0.05, 0.3]))
    def wait_handle(self, i, d):
        "A later, bounded wait on a handle: its result, its error, or a timeout that leaves it running."
        hs = [s for s in self.sent if s.handle is not None]
        if not hs: return self.step(0)
        s = hs[i % len(hs)]
        try: out = self.run(s.handle.wait(d))
        except RequestTimeoutError: assert not s.handle.done()
        except NAMED + (PermissionError,): assert s.handle.done()
        else: self.check_own(s, out)

    @rule(d=st.sampled_from([0, 0.01, 0.1, 0.4]))
    def pause(self, d): self.step(d)

    @rule()
    def interrupt(self):
        "An explicit interrupt of whatever the kernel runs: the only way a request not ours to stop may be interrupted."
        self.explicit.append(self.now())
        self.run(self.call_soon(lambda: self.kc.interrupt(reply=False)))
        self.step(0.05)

    @rule(data=st.data())
    def fault(self, data):
        getattr(self, data.draw(st.sampled_from(self.faults)))()

    def stop_client(self):
        t = self.now()
        self.kc.stop_channels()
        self.step(0.05)
        self.expect_all_ended(ClientClosedError, t)
        self.run(self.start_client())

    def restart(self):
        t = self.now()
        self.run(self.km.restart_kernel(now=True))
        self.step(0.05)
        self.expect_all_ended(KernelRestartedError, t)
        if self.sid is not None: self.sid = self.run(self.new_subshell())

    def sigkill(self):
        t = self.now()
        os.kill(self.pid(), signal.SIGKILL)
        while any(s.ended is None for s in self.sent) and self.now() < t+SLACK+self.death_bound(): self.step(0.05)
        self.expect_all_ended(DeadKernelError, t)
        self.run(self.close_all())
        self.run(self.start_kernel())

    def death_bound(self): return 0  # how much longer than the client's watcher the transport may take to learn of a death
    def pid(self): return self.km.provisioner.process.pid
    def step(self, d:float): self.run(asyncio.sleep(d))

    async def new_subshell(self):
        # ipykernel 7.4 fails a create_subshell_request that comes before its shell thread is up after a restart (an
        # AssertionError in its control handler, and no reply), so wait until the shell answers first
        await self.kc.kernel_info(reply=True, timeout=20)
        return await self.kc.create_subshell(timeout=10)

    async def ask(self, code): return await self.kc.execute(code, reply=True, timeout=10)

    async def call_soon(self, f):
        "Call `f` inside the loop, as async callers of the client do."
        return f()

    def expect_all_ended(self, exc, t:float, new_kernel_since:float|None=None): # wall time after which a request's start was the new kernel's
        "After a fault at loop time `t`: every request has ended, and those it ended carry its named error (not a timeout still to come)."
        for s in self.sent:
            assert s.ended is not None, f'{s.kind} {s.mid} still pending after {exc.__name__}'
            o = s.outcome
            if s.ended < t or not isinstance(o, BaseException) or isinstance(o, asyncio.CancelledError): continue
            if new_kernel_since is not None and isinstance(o, RequestTimeoutError) and _started_after(o.request, new_kernel_since): continue  # its own end, in the new kernel
            if isinstance(o, TimeoutError):  # only if its own time was up before the fault's news could reach it
                assert s.bounded and s.t0+s.timeout <= t+SLACK, f'{s.kind} {s.mid} timed out after {exc.__name__}, which was due first'
            elif not isinstance(o, (RequestCancelledError, NoReplyError)): assert isinstance(o, exc), f'{s.kind} {s.mid} ended with {o!r}, not {exc.__name__}'
        self.check_outcomes()
        self.sent = []

    # ---- invariants
    @invariant()
    def nothing_went_wrong_on_the_loop(self):
        assert not self.loop_errors, self.loop_errors

    @invariant()
    def every_request_ends_in_time_with_its_own_reply_or_a_named_error(self):
        now = self.now()
        for s in self.sent:
            if s.bounded: assert (s.ended or now) - s.t0 <= s.timeout + SLACK, f'{s.kind} {s.mid} overran its {s.timeout} s'
        self.check_outcomes()
        if all(s.ended is not None and (s.handle is None or s.handle.done()) for s in self.sent): assert settled(self.kc), (self.kc._requests, self.kc._held)

    @invariant()
    def a_request_cancelled_while_held_never_runs(self):
        for s in self.sent:
            if s.never_runs: assert s.mid not in self.seen, f'{s.mid} was cancelled while held, and ran'

    def check_outcomes(self):
        for s in self.sent:
            if s.ended is None: continue
            o = s.outcome
            if isinstance(o, BaseException):
                allowed = NAMED + (asyncio.CancelledError,)*s.cancelled_by_us + (PermissionError,)*(s.kind == 'input_raise')
                assert isinstance(o, allowed), f'{s.kind} {s.mid} ended with {o!r}'
            else: self.check_own(s, o)

    def check_own(self, s, o):
        "A result is the request's own: its parent is the request, what it computed or printed is its marker, and only our own stops interrupt it."
        reply = o.reply if isinstance(o, Result) else next(m for m in o if m['msg_type'].endswith('_reply')) if isinstance(o, list) else o
        assert reply['parent_header']['msg_id'] == s.mid, (s.kind, s.mid, reply['parent_header'])
        if isinstance(o, list): assert all(m['parent_header']['msg_id'] == s.mid for m in o)
        c = reply['content']
        if c.get('ename') == 'KeyboardInterrupt' or c.get('status') == 'aborted':  # stopped: by us, or behind a request we stopped
            ours = s.kind in ('interrupt', 'input_raise', 'input_hang') or s.interrupted_by_us or s.cancelled_by_us
            assert ours or any(x.interrupted_by_us or x.kind in ('interrupt', 'input_raise', 'input_hang') for x in self.sent) or self.explicit, (s.kind, s.mid, c)
        if c.get('status') != 'ok': return
        if s.kind in ('reply', 'subshell'): assert c['user_expressions']['m']['data']['text/plain'] == str(s.marker)
        if isinstance(o, Result): self.check_timing(o.timing)
        text = ''.join(getattr(x, 'text', '') for x in o.outputs) if isinstance(o, Result) else ''.join(m['content'].get('text', '') for m in o if m['msg_type'] == 'stream') if isinstance(o, list) else None
        if s.kind in ('outputs', 'stream', 'detach', 'interrupt', 'handle'): assert text == f'{s.marker}\n', (s.kind, text)
        if s.kind == 'input_ok': assert f'ans{s.marker}' in text, text

    def check_timing(self, t):
        "Times of a finished request come in the order a request lives."
        order = [t[k] for k in ('client.submitted', 'client.sent', 'iopub.status.busy', 'shell.execute_reply', 'iopub.status.idle') if k in t]
        assert order == sorted(order), t

    def teardown(self):
        try:
            if self.kc is None or self.kc._state=='closed': return  # a fault step failed half-way (and is what gets reported): only clean up
            deadline = self.now()+30
            while any(s.ended is None and s.handle is None for s in self.sent) and self.now() < deadline: self.step(0.05)
            assert all(s.ended is not None for s in self.sent if s.handle is None), [s.kind for s in self.sent if s.ended is None]
            self.run(self.kc.until_idle(timeout=30))  # no request without a timeout is left behind: the kernel is done with all of them
            while any(s.ended is None for s in self.sent) and self.now() < deadline: self.step(0.05)
            assert all(s.ended is not None for s in self.sent), [s.kind for s in self.sent if s.ended is None]
            self.check_outcomes()
            for _ in range(5):  # the kernel still answers; an interrupt or failure still settling may abort a request or two first
                try: r = self.run(self.ask('1'))
                except TimeoutError as e: raise AssertionError(f'the kernel no longer answers: {self.diagnose()}') from e
                if r['content']['status'] == 'ok': break
                self.step(0.3)
            assert r['content']['status'] == 'ok', r['content']
            assert self.run(self.kc.until_idle(timeout=10)).idle and settled(self.kc) and not self.kc._side
            self.run(self.close_all())
            assert not [t for t in asyncio.all_tasks(self.loop)], asyncio.all_tasks(self.loop)
            assert not self.loop_errors, self.loop_errors
        finally:
            if self.kc is not None: self.loop.run_until_complete(self.close_all())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())  # the threads that looked up the server's name
            self.loop.close()
        self.check_resources()

    def check_resources(self):
        assert open_fds() <= self.fds and threading.active_count() <= self.threads, (self.fds, open_fds(), self.threads, threading.active_count())

    def diagnose(self):
        "The client's state, and the kernel's Python stacks if py-spy can take them: what a failure report needs."
        kc, pid = self.kc, self.pid()
        state = dict(client=kc._state, requests=list(kc._requests), ghosts=list(kc._ghosts), held=kc.kernel_state,
                     stdin=[m['parent_header'].get('msg_id') for m in kc._inboxes['stdin'].msgs], side=len(kc._side))
        spy = shutil.which('py-spy', path=os.path.dirname(sys.executable)) or shutil.which('py-spy')
        stacks = subprocess.run([spy, 'dump', '--pid', str(pid)], capture_output=True, text=True, timeout=30).stdout if spy and pid else '(no py-spy)'
        return f'{state}\nkernel {pid}:\n{stacks}'

    async def close_all(self):
        if self.kc is not None: await self.kc.astop_channels()
        if self.km is not None: await self.km.shutdown_kernel(now=True)
        self.kc = self.km = None

def _started_after(req, wall:float):
    "Whether the kernel started `req` (its busy status's date) after wall-clock time `wall`."
    return req.t_busy is not None and req.t_busy.timestamp() > wall

def _refuse(prompt, password): raise PermissionError('refused')
async def _hang(prompt, password): await asyncio.Event().wait()

def ipy_code(kind, dur, marker):
    "What each kind of request runs on ipykernel."
    if kind.startswith('input'): return f'import time; time.sleep({dur}); print(input("?"), {marker})'
    if kind in ('outputs', 'stream', 'detach', 'interrupt', 'handle'): return f'import time; time.sleep({dur}); print({marker})'
    return f'import time; time.sleep({dur})'

def tiny_code(kind, dur, marker):
    "What each kind of request runs on the tiny kernel (its directives)."
    return f'%sleep {dur}' + ('\n%input' if kind.startswith('input') else f'\n%echo {marker}' if kind in ('outputs', 'stream', 'detach', 'interrupt', 'handle') else '')

class IPyMachine(KernelClientMachine):
    dialect = staticmethod(ipy_code)
    def manager(self): return ConKernelManager(session=Session(key=b'fuzz'))

class TinyMachine(KernelClientMachine):
    dialect = staticmethod(tiny_code)
    def manager(self): return tiny_manager(session=Session(key=b'fuzz'))

class WsMachine(KernelClientMachine):
    "ipykernel on a Jupyter Server, through the websocket, with the transport's own faults among the steps."
    dialect, url, token = staticmethod(ipy_code), None, None
    faults = ('stop_client', 'restart', 'sigkill', 'drop_connection', 'stop_while_reconnecting', 'deleted_by_another', 'restarted_by_another',
              'server_restarted', 'slow_upgrade', 'stop_while_upgrading')
    kpid = server = proxy = None  # the server (restartable) and the proxy in front of it: the client talks to the proxy
    def manager(self): return RemoteKernelManager(self.url, token=self.token)
    def pid(self): return self.kpid
    def death_bound(self): return 12  # the server's restarter notices a dead kernel within its own interval (jupyter_server's default 3 s, twice)

    async def start_client(self):
        await super().start_client()
        self.kc.rest_interval = 0.5
        await self.learn_pid()

    async def learn_pid(self):
        r = await self.kc.execute('', user_expressions=dict(p='__import__("os").getpid()'), reply=True, timeout=20)
        self.kpid = int(r['content']['user_expressions']['p']['data']['text/plain'])

    def sigkill(self):
        "SIGKILL on a server: its restarter restarts the kernel, and says so; pending requests fail with KernelRestartedError."
        t, wall, self.restarting_at = self.now(), time.time(), None
        os.kill(self.kpid, signal.SIGKILL)
        # what the dead kernel never read, the server's socket hands to the new kernel: those requests run there, to their own end
        until = max([t+SLACK+self.death_bound()] + [s.t0+s.timeout+SLACK for s in self.sent if s.bounded])
        while (self.restarting_at is None or any(s.ended is None for s in self.sent)) and self.now() < until: self.step(0.05)
        # the news comes when the server's restarter notices (within its interval): a request whose own time ran out before then timed out rightly
        news = self.restarting_at or min((s.ended for s in self.sent if s.ended >= t and isinstance(s.outcome, DeadKernelError)), default=t)
        self.expect_all_ended(DeadKernelError, news, new_kernel_since=wall)  # KernelRestartedError is one
        self.run(self.settle_after_restart())

    async def settle_after_restart(self):
        "Wait until the restarted kernel answers again (the server restarts it; the client carries on by itself)."
        for _ in range(100):
            try:
                if self.kc._state=='closed': await self.close_all(); return await self.start_kernel()
                await self.kc.execute('1', reply=True, timeout=5); break
            except (KernelRestartedError, TimeoutError): await asyncio.sleep(0.2)
        await self.learn_pid()
        if self.sid is not None: self.sid = await self.new_subshell()

    def restart(self):
        super().restart()
        self.run(self.learn_pid())

    async def close_all(self):
        if self.kc is not None: await self.kc.astop_channels()
        if self.km is not None:
            try: await self.km.shutdown_kernel()
            except ServerError as e: assert e.status == 404, e  # deleted by another already
        self.kc = self.km = None

    def drop_connection(self):
        "The TCP connection drops mid-request (a proxy restarts): the client reconnects with its session, the server replays; nothing fails."
        ws = self.kc._ws
        if ws is not None: ws.conn.protocol.stream.close()
        self.step(0.05)

    def stop_while_reconnecting(self):
        "A client stopped while its websocket reconnects leaves no connection behind on the server."
        ws, t = self.kc._ws, self.now()
        if ws is not None: ws.conn.protocol.stream.close()
        self.kc.stop_channels()
        self.step(0.05)
        self.expect_all_ended(ClientClosedError, t)
        self.run(self.until_no_connection())
        self.run(self.start_client())

    async def until_no_connection(self, timeout=10):
        deadline = time.monotonic()+timeout
        while sockets_to(self.url, self.rest_ports()):
            assert time.monotonic() < deadline, sockets_to(self.url)
            await asyncio.sleep(0.05)

    def rest_ports(self): return set()

    def server_restarted(self):
        "The server restarts behind its proxy (the URL its clients know), and its kernels go down with it: pending requests fail with DeadKernelError; a new kernel is started."
        self.run(asyncio.to_thread(self.server.restart), timeout=120)  # the loop runs meanwhile: the client hears what it can, as it would
        t = self.now()+1  # the news may come only now: from the new server, on the next reconnection attempt (backing off to 1 s)
        while any(s.ended is None for s in self.sent) and self.now() < t+SLACK+self.kc.reconnect_timeout: self.step(0.05)
        self.expect_all_ended(DeadKernelError, t)
        self.run(self.close_all())
        self.run(self.start_kernel())

    def slow_upgrade(self):
        "The connection drops, and the next one takes a second to open (a slow proxy or server): the client reconnects with its session; nothing is lost."
        self.proxy.delay_next(1.0)
        self.drop_connection()

    def stop_while_upgrading(self):
        "A client stopped while its reconnection waits on a slow upgrade leaves no connection behind, on the proxy or the server."
        self.proxy.delay_next(2.0)
        if (ws := self.kc._ws) is not None: ws.conn.protocol.stream.close()
        self.step(0.3)  # the reconnection now waits in the proxy
        t = self.now()
        self.kc.stop_channels()
        self.step(0.05)
        self.expect_all_ended(ClientClosedError, t)
        self.run(self.until_no_connection())
        self.run(self.start_client())

    def deleted_by_another(self):
        "Someone else deletes the kernel: pending requests fail with DeadKernelError within a few REST checks; a new kernel is started."
        t = self.now()
        other = RemoteKernelManager(self.url, token=self.token, kernel_id=self.km.kernel_id)
        self.run(other.shutdown_kernel())
        while any(s.ended is None for s in self.sent) and self.now() < t+SLACK+4*self.kc.rest_interval: self.step(0.05)
        self.expect_all_ended(DeadKernelError, t)
        self.run(self.close_all())
        self.run(self.start_kernel())

    def restarted_by_another(self):
        "Someone else restarts the kernel through REST: pending requests fail with KernelRestartedError, and the client carries on."
        t = self.now()
        other = RemoteKernelManager(self.url, token=self.token, kernel_id=self.km.kernel_id)
        self.run(other.restart_kernel())
        while any(s.ended is None for s in self.sent) and self.now() < t+SLACK+10: self.step(0.05)
        self.expect_all_ended(KernelRestartedError, t)
        self.run(self.settle_after_restart())

    def check_resources(self):
        deadline = time.monotonic()+10
        while self.proxy.pipes and time.monotonic() < deadline: time.sleep(0.05)  # a connection held by a slow upgrade closes once let through
        assert threading.active_count() <= self.threads, (self.threads, threading.active_count())
        assert not self.proxy.pipes and not sockets_to(self.url) and not sockets_to(self.server.url), (sockets_to(self.url), sockets_to(self.server.url))  # no connection of ours is left, on the proxy or the server

def fuzz_settings(examples:int):
    return settings(max_examples=max(examples, 1), stateful_step_count=int(os.environ.get('FUZZ_STEPS', 12)), deadline=None,
                    phases=[Phase.explicit, Phase.generate] + ([Phase.shrink] if os.environ.get('FUZZ_SHRINK') else []),
                    suppress_health_check=list(HealthCheck), print_blob=True)

# the warm-up: the first client and kernel of a process create lasting objects (zmq context, caches) no example should be blamed for
_warm = asyncio.new_event_loop()
async def _warm_up():
    km = tiny_manager(session=Session(key=b'fuzz')); await km.start_kernel()
    kc = await km.client().start_channels(); await kc.astop_channels(); await km.shutdown_kernel(now=True)
_warm.run_until_complete(asyncio.wait_for(_warm_up(), 60)); _warm.close()

KernelClientMachine.counter = os.environ.get('FUZZ_COUNT_FILE')
TIMEOUT = pytest.mark.timeout(int(os.environ.get('FUZZ_TIMEOUT', 150)))

@TIMEOUT
@pytest.mark.skipif(not int(os.environ.get('FUZZ_TINY', 12)), reason='FUZZ_TINY=0')
def test_tiny(): run_state_machine_as_test(TinyMachine, settings=fuzz_settings(int(os.environ.get('FUZZ_TINY', 12))))

@TIMEOUT
@pytest.mark.skipif(not int(os.environ.get('FUZZ_IPY', 6)), reason='FUZZ_IPY=0')
def test_ipykernel(): run_state_machine_as_test(IPyMachine, settings=fuzz_settings(int(os.environ.get('FUZZ_IPY', 6))))

@TIMEOUT
@pytest.mark.skipif(not int(os.environ.get('FUZZ_WS', 5)), reason='FUZZ_WS=0')
def test_websocket(tmp_path_factory):
    "ipykernel on a Jupyter Server of this test's own (it restarts it), behind a proxy (which can make upgrades slow)."
    WsMachine.server = srv = RestartableServer(tmp_path_factory.mktemp('fuzz-server'))
    WsMachine.proxy = srv.proxy
    WsMachine.url, WsMachine.token = srv.proxy.url, srv.token
    try: run_state_machine_as_test(WsMachine, settings=fuzz_settings(int(os.environ.get('FUZZ_WS', 5))))
    finally: srv.close()
