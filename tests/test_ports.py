"Starts that never collide: kernels that choose their own ports (written back, or told through the JEP 66 handshake), and picked ports retried."
import asyncio, json, logging, os, signal, socket, subprocess, sys, textwrap, time
import pytest, zmq
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.provisioning.local_provisioner import LocalPortCache
from jupyter_client.session import Session
from conkernelclient import ConKernelManager, DeadKernelError, StartTimeoutError
from conkernelclient.tinykernel import TinySpecs, tiny_manager
from conftest import kernel, run
from conkernelclient.local import _ports_in

pytestmark = pytest.mark.timeout(180)

class PortThief:
    "Takes every port `jupyter_client`'s picker hands out, `rounds` times (None: always), the moment it hands it out: what another process can do."
    def __init__(self, monkeypatch, rounds:int|None=None):
        self.held, self.left, pick = [], None if rounds is None else 5*rounds, LocalPortCache.find_available_port
        def stolen(cache, ip):
            port = pick(cache, ip)
            if self.left is None or self.left > 0:
                self.left = None if self.left is None else self.left-1
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZMQ binds: only a live socket keeps the port
                s.bind((ip, port)); s.listen()
                self.held.append(s)
            return port
        monkeypatch.setattr(LocalPortCache, 'find_available_port', stolen)

    def ports(self): return {s.getsockname()[1] for s in self.held}
    def close(self):
        for s in self.held: s.close()

@pytest.fixture
def thief(monkeypatch):
    t = PortThief(monkeypatch)
    yield t
    t.close()

def test_a_port_thief_kills_vanillas_kernels_and_none_of_ours(thief):
    "With every picked port taken at once, `AsyncKernelManager`'s ipykernel dies of it; ours (which lets ipykernel choose) start 20 of 20."
    async def vanilla():
        km = AsyncKernelManager()
        await km.start_kernel()
        kc = km.client(); kc.start_channels()
        try:
            with pytest.raises(RuntimeError, match='died'): await kc.wait_for_ready(timeout=30)
            assert thief.held and {km.shell_port, km.iopub_port} <= thief.ports()
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)
    async def ours(sem):
        async with sem:
            async with kernel() as (km, kc):
                assert km._port_strategy()=='zero' and not {km.shell_port, km.iopub_port} & thief.ports()
                return (await kc.execute('1+1', reply=True, timeout=30))['content']['status']
    async def main():
        await vanilla()
        stolen = len(thief.held)
        sem = asyncio.Semaphore(4)
        statuses = await asyncio.gather(*[ours(sem) for _ in range(20)], return_exceptions=True)
        print(f'\nport thief: vanilla ipykernel died of it; ours started {statuses.count("ok")} of 20')
        assert statuses == ['ok']*20
        assert len(thief.held) == stolen  # ours never asked the picker
    run(main(), 150)

def test_picked_ports_lost_to_another_process_are_picked_again(monkeypatch, caplog):
    "A kernel that only binds the ports it is given ('pick') and loses them at its first start is started again on fresh ones."
    thief = PortThief(monkeypatch, rounds=1)
    async def main():
        km = tiny_manager(port_strategy='pick', session=Session(key=b'k'))
        await km.start_kernel()
        try:
            assert len(thief.held)==5 and not {getattr(km, f'{n}_port') for n in ('shell', 'iopub', 'stdin', 'control', 'hb')} & thief.ports()
            kc = await km.client().start_channels(timeout=30)
            assert (await kc.execute('x', reply=True, timeout=10))['content']['status']=='ok'
            await kc.astop_channels()
        finally: await km.shutdown_kernel(now=True)
    try:
        with caplog.at_level(logging.WARNING, 'conkernelclient'): run(main(), 60)
    finally: thief.close()
    assert 'starting it again on fresh ports' in caplog.text

class Specs(TinySpecs):
    "The tiny kernel, and `quitter`: a kernel that exits with code 3 at once, as a broken one does."
    def get_kernel_spec(self, kernel_name:str):
        if kernel_name!='quitter': return super().get_kernel_spec(kernel_name)
        return KernelSpec(argv=[sys.executable, '-c', 'import sys; sys.exit(3)', '{connection_file}'], display_name='quitter', language='none')

@pytest.mark.parametrize('strategy', ['zero', 'handshake'])
def test_a_kernel_that_exits_before_it_tells_its_ports_fails_the_start_with_its_exit_code(strategy):
    async def main():
        km = ConKernelManager(kernel_name='quitter', kernel_spec_manager=Specs(), port_strategy=strategy)
        t = time.monotonic()
        with pytest.raises(DeadKernelError, match='code 3'): await km.start_kernel()
        assert time.monotonic()-t < km.ports_timeout/4 and not os.path.exists(km.connection_file)
    run(main(), 60)

def test_a_kernel_on_picked_ports_that_exits_of_something_else_is_left_to_jupyter_clients_ways():
    "Not a collision: `start_kernel` returns as `jupyter_client`'s does (its restarter expects to restart such a kernel); a client's start fails."
    async def main():
        km = ConKernelManager(kernel_name='quitter', kernel_spec_manager=Specs(), port_strategy='pick', session=Session(key=b'k'))
        await km.start_kernel()
        try:
            assert not await km.is_alive()
            with pytest.raises(DeadKernelError): await km.client().start_channels(timeout=30)
        finally: await km.shutdown_kernel(now=True)
    run(main(), 60)

@pytest.mark.parametrize('how', ['cancelled', 'timed out'])
def test_a_start_abandoned_while_the_kernel_has_yet_to_tell_its_ports_kills_it(how):
    "A kernel still starting (it binds 30 s late) when its start is cancelled, or outlasts `ports_timeout`, is killed and its file removed."
    async def main():
        km = tiny_manager(bind_delay=30, ports_timeout=1 if how=='timed out' else 60, session=Session(key=b'k'))
        start = asyncio.ensure_future(km.start_kernel())
        while getattr(km.provisioner, 'process', None) is None: await asyncio.sleep(0.01)
        proc = km.provisioner.process
        if how=='cancelled':
            await asyncio.sleep(0.5)
            start.cancel()
        with pytest.raises(asyncio.CancelledError if how=='cancelled' else StartTimeoutError): await asyncio.wait_for(start, 10)
        assert proc.poll() is not None and not os.path.exists(km.connection_file)
    run(main(), 60)

def test_the_handshake_with_curve(tmp_path):
    "A kernel declaring protocol 5.6 is started through JEP 66: it binds its own ports and tells them; its channels are CurveZMQ-encrypted."
    async def main():
        km = tiny_manager(protocol='5.6', curve=True, session=Session(key=b'k'), connection_file=str(tmp_path/'kernel.json'))
        assert km._port_strategy()=='handshake'
        registration = {}
        write = km._write_registration_file
        def spy():
            write()
            with open(km.connection_file) as f: registration.update(json.load(f))
        km._write_registration_file = spy
        await km.start_kernel()
        try:
            assert registration['registration_port'] and not any(k.endswith('_port') and k!='registration_port' for k in registration)
            assert registration['curve_secretkey'] and km._registration is None
            with open(km.connection_file) as f: cfg = json.load(f)  # an ordinary connection file, now
            assert cfg['shell_port']==km.shell_port>0 and cfg['curve_publickey']==km.curve_publickey.decode()
            kc = await km.client().start_channels(timeout=30)
            assert (await kc.execute('x', reply=True, timeout=10))['content']['status']=='ok'
            assert not await plain_answer(km)  # without the server's key, the kernel's sockets say nothing
            await km.restart_kernel(now=True)  # a restart keeps the ports: the kernel reads an ordinary file
            assert (await kc.execute('y', reply=True, timeout=10))['content']['status']=='ok'
            await kc.astop_channels()
        finally: await km.shutdown_kernel(now=True)
    run(main(), 60)

async def plain_answer(km):
    "Whether the kernel answers a `kernel_info_request` sent over a socket without CurveZMQ."
    ctx = zmq.asyncio.Context()
    s = ctx.socket(zmq.DEALER)
    s.connect(f'tcp://{km.ip}:{km.shell_port}')
    try:
        km.session.send(s, 'kernel_info_request')
        return bool(await s.poll(1000))
    finally:
        s.close(linger=0); ctx.term()

def test_a_forged_registration_is_refused_and_the_kernels_own_is_taken(tmp_path):
    "A registration without the key (another process on the registration port) is refused; the kernel's signed one is taken."
    async def main():
        km = tiny_manager(protocol='5.6', bind_delay=1, session=Session(key=b'k'), connection_file=str(tmp_path/'kernel.json'))
        start = asyncio.ensure_future(km.start_kernel())
        while km._registration is None: await asyncio.sleep(0.01)
        with open(km.connection_file) as f: port = json.load(f)['registration_port']
        forger, ctx = Session(key=b'not-the-key'), zmq.asyncio.Context()
        s = ctx.socket(zmq.REQ); s.connect(f'tcp://127.0.0.1:{port}')
        forger.send(s, 'handshake_request', dict.fromkeys(['shell_port', 'iopub_port', 'stdin_port', 'control_port', 'hb_port'], 1))
        assert await s.poll(5000)
        reply = json.loads((await s.recv_multipart())[-1])
        s.close(linger=0); ctx.term()
        assert reply['status']=='error'
        await asyncio.wait_for(start, 30)
        try:
            assert km.shell_port != 1
            kc = await km.client().start_channels(timeout=30)
            assert (await kc.execute('x', reply=True, timeout=10))['content']['status']=='ok'
            await kc.astop_channels()
        finally: await km.shutdown_kernel(now=True)
    run(main(), 60)

BATCH = '''
import asyncio, sys
from conkernelclient import ConKernelManager
async def one():
    km = ConKernelManager()
    try:
        await asyncio.wait_for(km.start_kernel(), 90)
        kc = await km.client().start_channels(timeout=90)
        ok = (await kc.execute('1+1', reply=True, timeout=60))['content']['status']=='ok'
        await kc.astop_channels()
        return ok
    except Exception as e:
        print('failed:', repr(e), file=sys.stderr)
        return False
    finally: await km.shutdown_kernel(now=True)
async def main(): print(sum(await asyncio.gather(*[one() for _ in range(5)])))
asyncio.run(main())
'''

def test_four_processes_each_starting_five_ipykernels_at_once_lose_none():
    "4 processes x 5 concurrent starts on ipykernel: every kernel starts and answers (what collided under picked ports)."
    t = time.monotonic()
    procs = [subprocess.Popen([sys.executable, '-c', BATCH], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=170) for p in procs]
    print(f'\n4 processes x 5 concurrent ipykernel starts: {sum(int(o.strip() or 0) for o,_ in outs)} of 20 answered in {time.monotonic()-t:.1f} s')
    assert [o.strip() for o,_ in outs] == ['5']*4, [e[-2000:] for _,e in outs]

class LateLauncher(ConKernelManager):
    "A manager on a loaded machine: by the time it checks the file after the launch, the kernel has sent its handshake, or filled in its ports."
    def _reconcile_connection_info(self, info):
        if self._registration is not None: zmq.Socket.shadow(self._registration.underlying).poll(30000)  # the kernel's handshake has come
        else:  # zeros: it has written its ports (a blocking wait, as a busy loop would be late)
            deadline = time.monotonic()+30
            while _ports_in(self.connection_file) is None and time.monotonic() < deadline: time.sleep(0.01)
        super()._reconcile_connection_info(info)

@pytest.mark.parametrize('kind', ['zero', 'handshake'])
def test_a_kernel_quicker_than_its_manager_keeps_the_ports_it_told(kind):
    "`jupyter_client` rewrites the file right after the launch when it differs: a kernel that filled in its ports first must not lose them."
    async def main():
        specs = TinySpecs(protocol='5.6' if kind=='handshake' else '5.3')
        km = LateLauncher(kernel_name='tiny', kernel_spec_manager=specs, session=Session(key=b'k'), ports_timeout=20)
        await km.start_kernel()
        try:
            kc = await km.client().start_channels(timeout=30)
            assert km._port_strategy()==kind and (await kc.execute('x', reply=True, timeout=10))['content']['status']=='ok'
            await kc.astop_channels()
        finally: await km.shutdown_kernel(now=True)
    run(main(), 90)
