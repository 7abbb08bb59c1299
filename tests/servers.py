"Real servers for the remote tests: Jupyter Servers with random tokens and private roots, and Enterprise Gateway in a venv of its own."
import asyncio, contextlib, os, secrets, shutil, socket, subprocess, sys, threading, time, urllib.error, urllib.request
from urllib.parse import urlsplit
import psutil, pytest
from pathlib import Path
from conkernelclient.remote import RemoteKernelManager, start_local_server

def jupyter_server(root, *args):
    "Start a Jupyter Server with a random token in `root`: `(process, url, token)`."
    token = secrets.token_hex(16)
    proc, url = start_local_server(root, token, *args)
    return proc, url, token

def stop(proc):
    "Stop a server process and wait for it."
    proc.terminate()
    try: proc.wait(15)
    except Exception: proc.kill(); proc.wait(5)

@contextlib.asynccontextmanager
async def remote_kernel(url:str, token:str, clients:int=1, km_kw:dict|None=None, **client_traits):
    "A fresh kernel on the server at `url` and `clients` started websocket clients (with `client_traits`), all closed afterwards."
    km = RemoteKernelManager(url, token=token, **(km_kw or {}))
    await asyncio.wait_for(km.start_kernel(), 60)
    kcs = []
    try:
        for _ in range(clients):
            kc = km.client()
            for k,v in client_traits.items(): setattr(kc, k, v)
            kcs.append(await asyncio.wait_for(kc.start_channels(), 60))
        yield km, *kcs
    finally:
        for kc in kcs: await kc.astop_channels()
        with contextlib.suppress(Exception): await asyncio.wait_for(km.shutdown_kernel(), 30)

REPO = Path(__file__).resolve().parent.parent
EG_VENV = REPO/'.cache'/'eg-venv'  # Enterprise Gateway 3.3 pins jupyter_client<7 and jupyter_server<2: it needs a venv of its own
EG_REQS = ['jupyter_enterprise_gateway==3.3.0', 'ipykernel<7']

def eg_venv():
    "The Enterprise Gateway venv, created (once, cached in the git-ignored `.cache/`) if need be; `(path, None)` or `(None, why not)`."
    exe = EG_VENV/'bin'/'jupyter-enterprisegateway'
    if exe.exists(): return EG_VENV, None
    try:
        subprocess.run([sys.executable, '-m', 'venv', '--clear', str(EG_VENV)], check=True, capture_output=True, timeout=120)
        subprocess.run([str(EG_VENV/'bin'/'pip'), 'install', '-q', *EG_REQS], check=True, capture_output=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as e:
        out = getattr(e, 'stderr', b'') or b''
        shutil.rmtree(EG_VENV, ignore_errors=True)
        return None, f'could not install {" ".join(EG_REQS)} into its own venv: {e} {out.decode(errors="replace")[-500:]}'
    return EG_VENV, None

def _free_port():
    "A TCP port free on 127.0.0.1 right now."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def enterprise_gateway(root:Path, venv:Path, timeout:float=60):
    "Start Enterprise Gateway (local kernels) on 127.0.0.1 with a random token and private Jupyter dirs: `(process, url, token)`."
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith('JUPYTER')}
    env.update(JUPYTER_RUNTIME_DIR=str(root/'runtime'), JUPYTER_DATA_DIR=str(root/'data'), JUPYTER_CONFIG_DIR=str(root/'config'),
               IPYTHONDIR=str(root/'ipython'), EG_INHERITED_ENVS='IPYTHONDIR,PATH,HOME')  # EG hands kernels only KERNEL_* otherwise
    for attempt in range(3):  # the free port may be taken between finding it and binding it
        port = _free_port()
        cmd = [str(venv/'bin'/'jupyter-enterprisegateway'), '--ip=127.0.0.1', f'--port={port}', '--port_retries=0',
               f'--EnterpriseGatewayApp.auth_token={token}']
        proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=open(root/f'eg{attempt}.log', 'wb'))
        url, deadline = f'http://127.0.0.1:{port}', time.monotonic()+timeout
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                req = urllib.request.Request(url+'/api/kernelspecs', headers={'Authorization': f'token {token}'})
                urllib.request.urlopen(req, timeout=2).close()
                return proc, url, token
            except (urllib.error.URLError, OSError): time.sleep(0.05)
        stop(proc)
    raise RuntimeError(f'Enterprise Gateway did not start: see {root}/eg*.log')

async def running_requests(kc, n:int=1):
    "`n` requests that would run for a minute (bounded by their timeout), sent and given time to reach the kernel."
    futs = [kc.execute('import time; time.sleep(60)', reply=True, timeout=120) for _ in range(n)]
    await asyncio.sleep(0.3)
    return futs

@contextlib.asynccontextmanager
async def fake_server(handlers:list):
    "A scripted tornado app (`handlers`: tornado's `[(pattern, RequestHandler, kwargs)]`) on 127.0.0.1 and a free port, in the running loop: its URL."
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets
    from tornado.web import Application
    sockets = bind_sockets(0, '127.0.0.1')
    server = HTTPServer(Application(handlers))
    server.add_sockets(sockets)
    try: yield f'http://127.0.0.1:{sockets[0].getsockname()[1]}'
    finally:
        server.stop()
        await asyncio.wait_for(server.close_all_connections(), 10)

def sockets_to(url:str, but:set=frozenset()): # local ports of connections to leave out
    "The TCP connections this process holds open to the server at `url`, but those from ports `but` (closed ones linger only in TIME_WAIT or FIN_WAIT)."
    port = urlsplit(url).port
    return [c for c in psutil.Process().net_connections('tcp') if c.raddr and c.raddr.port==port and c.laddr.port not in but
            and c.status in (psutil.CONN_ESTABLISHED, psutil.CONN_CLOSE_WAIT, psutil.CONN_SYN_SENT)]

async def until_no_sockets(url:str, but:set=frozenset(), timeout:float=10):
    "Wait until this process holds no connection to the server at `url` (but from ports `but`); fail with what it holds if it still does."
    deadline = time.monotonic()+timeout
    while held := sockets_to(url, but):
        if time.monotonic() > deadline: pytest.fail(f'{len(held)} connections to the server are still open: {[(c.laddr.port, c.status) for c in held]}')
        await asyncio.sleep(0.05)

async def until(pred, timeout:float=10, every:float=0.01):
    "Wait until `pred()` (sync or async) is true; `TimeoutError` after `timeout` seconds."
    async def poll():
        while not ((r := pred()) if not asyncio.iscoroutinefunction(pred) else await pred()): await asyncio.sleep(every)
    await asyncio.wait_for(poll(), timeout)

class Proxy:
    "A TCP proxy on 127.0.0.1 to `port`, on a thread of its own: what a real proxy in front of a server does, and `delay_next` makes the next connection slow to open (a slow upgrade)."
    def __init__(self, port:int):
        self.target,self.delays,self.pipes,self.held = port,[],set(),0  # held: connections waiting out a delay now
        self.loop, ready = asyncio.new_event_loop(), threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), name='test-proxy', daemon=True)
        self.thread.start()
        if not ready.wait(10): raise RuntimeError('the proxy did not start')
        self.url = f'http://127.0.0.1:{self.port}'

    def _serve(self, ready):
        self.server = self.loop.run_until_complete(asyncio.start_server(self._pipe, '127.0.0.1', 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _pipe(self, r, w):
        "Hold the connection for the next delay, if any; then copy both ways until either side closes, and close both."
        self.pipes.add(w)
        try:
            await self._forward(r, w)
        except asyncio.CancelledError: pass  # the proxy closes: a task that ends cancelled would upset asyncio's own callback
        finally:
            w.close()
            self.pipes.discard(w)

    async def _forward(self, r, w):
        if self.delays:
            self.held += 1
            try: await asyncio.sleep(self.delays.pop(0))
            finally: self.held -= 1
        try: ur, uw = await asyncio.open_connection('127.0.0.1', self.target)
        except OSError: return
        async def copy(src, dst):
            try:
                while data := await src.read(65536): dst.write(data); await dst.drain()
            except OSError: pass
            finally: dst.close()
        try: await asyncio.gather(copy(r, uw), copy(ur, w))
        finally: uw.close()

    def delay_next(self, seconds:float):
        "Make the next connection wait `seconds` before the proxy connects it through."
        self.loop.call_soon_threadsafe(self.delays.append, seconds)

    def close(self):
        "Stop the proxy and close every connection through it."
        async def shut():
            self.server.close()
            for w in list(self.pipes): w.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks: t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

class RestartableServer:
    "A Jupyter Server that can be restarted (its kernels go down with it) behind a `Proxy`, so its clients keep one URL; for as long as the test lasts."
    def __init__(self, root):
        self.root = root
        self.proc, self.url, self.token = jupyter_server(root)
        self.proxy = Proxy(urlsplit(self.url).port)

    def restart(self):
        "Stop the server and start a new one with the same token; the proxy's URL leads to it (a new port: no other process can take it meanwhile)."
        stop(self.proc)
        self.proc, self.url = start_local_server(self.root, self.token)
        self.proxy.target = urlsplit(self.url).port

    def close(self): self.proxy.close(); stop(self.proc)
