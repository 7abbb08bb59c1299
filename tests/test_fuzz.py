"""A stateful fuzz suite: hypothesis drives random interleavings of requests and faults against real kernels, and checks the
client's invariants after every step. CI runs a few examples; `tests/fuzz_long.py` runs it for as long as you like, with seeds."""
import asyncio, os, shutil, signal, subprocess, sys, threading, time
import pytest
from hypothesis import HealthCheck, Phase, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from jupyter_client.session import Session
from conkernelclient import (ClientClosedError, ConKernelManager, DeadKernelError, InputError, KernelReplyError,
                             KernelRestartedError, Result)
from conkernelclient.tinykernel import tiny_manager
from conftest import open_fds, pending, settled

SLACK = 3  # seconds a request may take to end beyond its own timeout, on a loaded 2-core machine
NAMED = (TimeoutError, ClientClosedError, DeadKernelError, KernelRestartedError, InputError)
KINDS = ['reply', 'outputs', 'stream', 'input_ok', 'input_raise', 'input_hang', 'control', 'dup', 'subshell']

class Sent:
    "One request the machine sent: what it expects back, and how and when it ended."
    def __init__(self, kind, mid, marker, timeout, t0):
        self.kind,self.mid,self.marker,self.timeout,self.t0 = kind,mid,marker,timeout,t0
        self.task,self.ended,self.outcome,self.cancelled_by_us = None,None,None,False

class KernelClientMachine(RuleBasedStateMachine):
    "Requests and faults on one kernel and client; subclasses pick the kernel."
    make, dialect, counter = None, None, None

    def __init__(self):
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.loop_errors, self.sent, self.n = [], [], 0
        self.loop.set_exception_handler(lambda loop, ctx: self.loop_errors.append(ctx))
        self.fds, self.threads = open_fds(), threading.active_count()
        self.run(self.start_kernel())
        if self.counter: open(self.counter, 'a').write('.')

    def run(self, coro, timeout:float=60): return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))
    def now(self): return self.loop.time()

    async def start_kernel(self):
        self.km = self.make(session=Session(key=b'fuzz'))
        await self.km.start_kernel()
        await self.start_client()

    async def start_client(self):
        self.kc = await self.km.client().start_channels(timeout=60)
        self.sid = await self.kc.create_subshell(timeout=10) if self.kc.supports('kernel subshells') else None

    # ---- requests
    @rule(batch=st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from([None, 0.05, 0.3, 2, 10]), st.sampled_from([0, 0.02, 0.2, 0.6])),
                         min_size=1, max_size=3))
    def send(self, batch):
        for kind, timeout, dur in batch: self.send_one(kind, timeout, dur)
        self.step(0)

    def send_one(self, kind, timeout, dur):
        if kind == 'input_hang' and timeout is None: timeout = 0.5  # a caller that waits for ever on a callback that never answers
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
        if s.kind == 'reply': return kc.execute(code, reply=True, user_expressions=dict(m=str(s.marker)), **opts)
        if s.kind == 'subshell': return kc.execute(code, reply=True, user_expressions=dict(m=str(s.marker)), subshell_id=self.sid, **opts)
        if s.kind == 'outputs': return kc.execute(code, outputs=True, **opts)
        if s.kind == 'control': return kc.control_request('kernel_info_request', **opts)
        if s.kind == 'stream': return kc.stream(code, **opts)
        answer = dict(input_ok=lambda p, pw: f'ans{s.marker}', input_raise=_refuse, input_hang=_hang)[s.kind]
        return kc.execute(code, on_input=answer, outputs=True, **opts)

    async def await_request(self, s, req):
        "Await `req` (a future, or a stream to drain) and record its outcome and end time."
        try:
            if hasattr(req, '__aiter__'): s.outcome = [m async for m in req]
            else: s.outcome = await req
        except BaseException as e: s.outcome = e
        finally: s.ended = self.now()

    # ---- callers and faults
    @rule(i=st.integers(0, 20))
    def cancel(self, i):
        live = [s for s in self.sent if s.ended is None]
        if live:
            s = live[i % len(live)]
            s.cancelled_by_us = True
            s.task.cancel()
        self.step(0)

    @rule(d=st.sampled_from([0, 0.01, 0.1, 0.4]))
    def pause(self, d): self.step(d)

    @rule()
    def interrupt(self):
        self.run(self.call_soon(lambda: self.kc.interrupt(reply=False)))
        self.step(0.05)

    @rule(fault=st.sampled_from(['stop_client', 'restart', 'sigkill']))
    def fault(self, fault):
        getattr(self, fault)()

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
        os.kill(self.km.provisioner.process.pid, signal.SIGKILL)
        while any(s.ended is None for s in self.sent) and self.now() < t+SLACK: self.step(0.05)
        self.expect_all_ended(DeadKernelError, t)
        self.run(self.close_all())
        self.run(self.start_kernel())

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

    def expect_all_ended(self, exc, t:float):
        "After a fault at loop time `t`: every request has ended, and those the fault ended carry its named error."
        for s in self.sent:
            assert s.ended is not None, f'{s.kind} {s.mid} still pending after {exc.__name__}'
            failed = isinstance(s.outcome, BaseException) and not isinstance(s.outcome, (TimeoutError, asyncio.CancelledError))
            if s.ended >= t and failed: assert isinstance(s.outcome, exc), f'{s.kind} {s.mid} ended with {s.outcome!r}, not {exc.__name__}'
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
            if s.timeout is not None: assert (s.ended or now) - s.t0 <= s.timeout + SLACK, f'{s.kind} {s.mid} overran its {s.timeout} s'
        self.check_outcomes()
        if all(s.ended is not None for s in self.sent):
            assert settled(self.kc), self.kc.__dict__

    def check_outcomes(self):
        for s in self.sent:
            if s.ended is None: continue
            o = s.outcome
            if isinstance(o, BaseException):
                allowed = NAMED + (asyncio.CancelledError,)*s.cancelled_by_us + (PermissionError,)*(s.kind == 'input_raise')
                assert isinstance(o, allowed), f'{s.kind} {s.mid} ended with {o!r}'
            else: self.check_own(s, o)

    def check_own(self, s, o):
        "A result is the request's own: its parent is the request, and what the code printed or computed is its marker."
        reply = o.reply if isinstance(o, Result) else o[-1] if isinstance(o, list) else o
        if isinstance(o, list): reply = next(m for m in o if m['msg_type'].endswith('_reply'))
        assert reply['parent_header']['msg_id'] == s.mid, (s.kind, s.mid, reply['parent_header'])
        if isinstance(o, list): assert all(m['parent_header']['msg_id'] == s.mid for m in o)
        c = reply['content']
        if c.get("status") != "ok" or self.dialect is tiny_code: return
        if s.kind in ('reply', 'subshell'): assert c['user_expressions']['m']['data']['text/plain'] == str(s.marker)
        text = ''.join(getattr(x, 'text', '') for x in o.outputs) if isinstance(o, Result) else ''.join(m['content'].get('text', '') for m in o if m['msg_type'] == 'stream') if isinstance(o, list) else None
        if s.kind in ('outputs', 'stream'): assert text == f'{s.marker}\n', (s.kind, text)
        if s.kind == 'input_ok': assert text == f'ans{s.marker} {s.marker}\n', text

    def teardown(self):
        try:
            deadline = self.now()+30
            while any(s.ended is None for s in self.sent) and self.now() < deadline: self.step(0.05)
            assert all(s.ended is not None for s in self.sent), [s.kind for s in self.sent if s.ended is None]
            self.check_outcomes()
            for _ in range(5):  # the kernel still answers; an interrupt or failure still settling may abort a request or two first
                try: r = self.run(self.ask('1'))
                except TimeoutError as e: raise AssertionError(f'the kernel no longer answers: {self.diagnose()}') from e
                if r['content']['status'] == 'ok': break
                self.step(0.3)
            assert r['content']['status'] == 'ok', r['content']
            assert settled(self.kc) and not self.kc._side
            self.run(self.close_all())
            assert not [t for t in asyncio.all_tasks(self.loop)], asyncio.all_tasks(self.loop)
            assert not self.loop_errors, self.loop_errors
        finally:
            if self.kc is not None: self.loop.run_until_complete(self.close_all())
            self.loop.close()
        assert open_fds() <= self.fds and threading.active_count() <= self.threads, (self.fds, open_fds(), self.threads, threading.active_count())

    def diagnose(self):
        "The client's state, and the kernel's Python stacks if py-spy can take them: what a failure report needs."
        kc, pid = self.kc, self.km.provisioner.process.pid
        state = dict(alive=self.run(self.km.is_alive()), client=kc._state, requests=list(kc._requests), asking=list(kc._asking),
                     stdin=[m['parent_header'].get('msg_id') for m in kc._inboxes['stdin'].msgs], answering=len(kc._side))
        spy = shutil.which('py-spy', path=os.path.dirname(sys.executable)) or shutil.which('py-spy')
        stacks = subprocess.run([spy, 'dump', '--pid', str(pid)], capture_output=True, text=True, timeout=30).stdout if spy else '(no py-spy)'
        return f'{state}\nkernel {pid}:\n{stacks}'

    async def close_all(self):
        if self.kc is not None: await self.kc.astop_channels()
        if self.km is not None: await self.km.shutdown_kernel(now=True)
        self.kc = self.km = None

def _refuse(prompt, password): raise PermissionError('refused')
async def _hang(prompt, password): await asyncio.Event().wait()

def ipy_code(kind, dur, marker):
    "What each kind of request runs on ipykernel."
    if kind.startswith('input'): return f'import time; time.sleep({dur}); print(input("?"), {marker})'
    if kind in ('outputs', 'stream'): return f'import time; time.sleep({dur}); print({marker})'
    return f'import time; time.sleep({dur})'

def tiny_code(kind, dur, marker):
    "What each kind of request runs on the tiny kernel (its directives)."
    return f'%sleep {dur}' + ('\n%input' if kind.startswith('input') else '\n%print 1' if kind in ('outputs', 'stream') else '')

class IPyMachine(KernelClientMachine): make, dialect = staticmethod(ConKernelManager), staticmethod(ipy_code)
class TinyMachine(KernelClientMachine): make, dialect = staticmethod(tiny_manager), staticmethod(tiny_code)

def fuzz_settings(examples:int):
    return settings(max_examples=examples, stateful_step_count=int(os.environ.get('FUZZ_STEPS', 12)), deadline=None,
                    phases=[Phase.explicit, Phase.generate] + ([Phase.shrink] if os.environ.get('FUZZ_SHRINK') else []),
                    suppress_health_check=list(HealthCheck), print_blob=True)

# the warm-up: the first client and kernel of a process create lasting objects (zmq context, caches) no example should be blamed for
_warm = asyncio.new_event_loop()
async def _warm_up():
    km = tiny_manager(session=Session(key=b'fuzz')); await km.start_kernel()
    kc = await km.client().start_channels(); await kc.astop_channels(); await km.shutdown_kernel(now=True)
_warm.run_until_complete(asyncio.wait_for(_warm_up(), 60)); _warm.close()

KernelClientMachine.counter = os.environ.get('FUZZ_COUNT_FILE')
TestTiny = TinyMachine.TestCase
TestTiny.settings = fuzz_settings(int(os.environ.get('FUZZ_TINY', 12)))
TestIPy = IPyMachine.TestCase
TestIPy.settings = fuzz_settings(int(os.environ.get('FUZZ_IPY', 6)))
TestTiny.pytestmark = TestIPy.pytestmark = pytest.mark.timeout(int(os.environ.get('FUZZ_TIMEOUT', 120)))
