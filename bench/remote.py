"""Benchmark: one ipykernel per transport, the same requests over ZMQ, over a Jupyter Server's kernel websocket, and through
jupyter_server's own `GatewayKernelClient` (the anchor), all measured in one run against one server.

Run: `.venv/bin/python bench/remote.py` (about 3 minutes; `--quick` for a smoke run).
Contenders: `zmq` (ConKernelClient, local kernel), `ws` (RemoteKernelClient: v1 frames, TCP_QUICKACK), `ws-nagle` (the same
without quick ACKs: what an unmodified server costs), `ws-json` (the legacy JSON protocol), `gateway` (GatewayKernelClient;
it loses replies with many requests in flight on one client, so at k in flight it runs k clients, each one request at a time,
the only safe way; they are started for each measurement and stopped after it, as their polling threads tax the process). Metrics: `latency`, one request alone (median); `rate@k`, requests per second with k in flight.
Then: seconds until pending requests fail after the remote kernel is SIGKILLed (the server restarts it) or deleted via REST.
Rounds are interleaved; figures are medians. The machine is noisy: read ratios, not absolute numbers."""
import argparse, asyncio, os, secrets, signal, statistics, sys, tempfile, time
from pathlib import Path
from jupyter_client.session import Session
sys.path.insert(0, str(Path(__file__).parent))
from bench import latency, window
from conkernelclient import ConKernelManager, DeadKernelError
from conkernelclient.remote import RemoteKernelManager, start_local_server

class Ours:
    def __init__(self, kc): self.kc = kc
    def send(self): return self.kc.execute('', reply=True, timeout=60)
    async def stop(self): await self.kc.astop_channels()

class Gateway:
    "GatewayKernelClients on one kernel: `send` takes an idle client (k in flight use k clients), as only that is safe."
    def __init__(self, km): self.km, self.kcs, self.idle = km, [], asyncio.Queue()
    async def send(self):
        kc = await self.idle.get()
        try: return await kc.execute('', reply=True, timeout=60)
        finally: self.idle.put_nowait(kc)
    async def use(self, k):
        "Start `k` clients for the next measurement; those of the last one are stopped first (their threads poll, and would tax the others)."
        await self.stop()
        self.kcs = [await _gateway_client(self.km) for _ in range(k)]
        self.idle = asyncio.Queue()
        for kc in self.kcs: self.idle.put_nowait(kc)
    async def stop(self):
        for kc in self.kcs: kc.stop_channels()
        self.kcs = []

def _gateway_config(url, token):
    "Point jupyter_server's GatewayClient at `url`; its websocket sends no token header of its own, so add the REST one."
    import websocket
    from jupyter_server.gateway.gateway_client import GatewayClient
    gc = GatewayClient.instance()
    gc.url, gc.ws_url, gc.auth_token = url, 'ws'+url[4:], token
    connect = websocket.create_connection
    def with_token(u, **kw):
        kw.setdefault('header', [f'Authorization: token {token}'])
        return connect(u, **kw)
    websocket.create_connection = with_token

async def _gateway_client(km):
    "A started GatewayKernelClient that has answered kernel_info (its `wait_for_ready` checks a local process)."
    kc = km.client()
    await asyncio.wait_for(kc.start_channels(), 30)
    for _ in range(30):
        try: await kc.kernel_info(reply=True, timeout=2); return kc
        except TimeoutError: pass
    raise TimeoutError('GatewayKernelClient never got ready')

async def contenders(url, token, kmax):
    "The started contenders and the managers to shut down."
    local = ConKernelManager(session=Session(key=secrets.token_hex(16).encode())); await local.start_kernel()
    rkm = RemoteKernelManager(url, token=token); await rkm.start_kernel()
    cs = dict(zmq=Ours(await local.client().start_channels()))
    for name, traits in dict(ws={}, **{'ws-nagle': dict(quickack=False), 'ws-json': dict(protocol='json')}).items():
        kc = rkm.client()
        for k, v in traits.items(): setattr(kc, k, v)
        cs[name] = Ours(await kc.start_channels())
    from jupyter_server.gateway.managers import GatewayKernelManager
    _gateway_config(url, token)
    gkm = GatewayKernelManager(); await gkm.start_kernel(kernel_name='python3')
    cs['gateway'] = Gateway(gkm)
    return cs, [local, rkm, gkm]

async def gateway_gather(gkm, n=100, reps=3):
    "Replies that came back when `n` `execute(reply=True)` are in flight at once on ONE GatewayKernelClient, per repeat."
    kc = await _gateway_client(gkm)
    got = []
    for _ in range(reps):
        res = await asyncio.gather(*[asyncio.wait_for(kc.execute('', reply=True, timeout=15), 20) for _ in range(n)], return_exceptions=True)
        got.append(sum(isinstance(r, dict) for r in res))
        await asyncio.sleep(1)
        for ch in (kc.shell_channel, kc.iopub_channel):  # what the losers left behind
            while not ch.empty(): ch.get_nowait()
    kc.stop_channels()
    return got

async def time_to_fail(url, token, how):
    "Seconds from killing (SIGKILL, or REST delete by another client) a remote kernel until its 10 pending requests have failed."
    km = RemoteKernelManager(url, token=token); await km.start_kernel()
    kc = await km.client().start_channels()
    r = await kc.execute('', user_expressions=dict(pid='__import__("os").getpid()'), reply=True, timeout=10)
    pid = int(r['content']['user_expressions']['pid']['data']['text/plain'])
    pending = [kc.execute('import time; time.sleep(60)', reply=True, timeout=120) for _ in range(10)]
    await asyncio.sleep(0.3)
    t0 = time.perf_counter()
    if how=='sigkill': os.kill(pid, signal.SIGKILL)
    else: await RemoteKernelManager(url, token=token, kernel_id=km.kernel_id).shutdown_kernel()
    res = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 30)
    took = time.perf_counter()-t0
    assert all(isinstance(e, DeadKernelError) for e in res), res
    await kc.astop_channels()
    if how=='sigkill':
        await asyncio.sleep(3)  # the server is restarting it: a DELETE meanwhile fails with HTTP 500
        await km.shutdown_kernel()
    return took

async def main(quick):
    windows, total, lat_n, n_rounds = ([1, 10], 100, 20, 1) if quick else ([1, 10, 100], 600, 50, 3)
    root = Path(tempfile.mkdtemp()); token = secrets.token_hex(16)
    proc, url = start_local_server(root, token)
    try:
        cs, kms = await contenders(url, token, max(windows))
        res = {}
        for _ in range(n_rounds):
            for name, c in cs.items():
                if isinstance(c, Gateway): await c.use(1)
                res.setdefault(('latency', name), []).append(await latency(c, lat_n))
                for k in windows:
                    if isinstance(c, Gateway): await c.use(k)
                    n = total//3 if k==1 or isinstance(c, Gateway) else total  # the slow ones get fewer requests
                    res.setdefault((f'rate@{k}', name), []).append((await window(c, n, k, timeout=600))[0])
                    print(f'{name} rate@{k}: {res[(f"rate@{k}", name)][-1]:.1f} req/s', file=sys.stderr, flush=True)
                if isinstance(c, Gateway): await c.stop()
        for c in cs.values(): await c.stop()
        lost = await gateway_gather(kms[-1], reps=1 if quick else 3)
        for km in kms: await km.shutdown_kernel()
        fails = {how: [await time_to_fail(url, token, how) for _ in range(1 if quick else 3)] for how in ('sigkill', 'delete')}
    finally:
        proc.terminate()
        try: proc.wait(15)
        except Exception: proc.kill()
    names = list(cs)
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"\n{'metric':<16}" + ''.join(f'{n:>12}' for n in names) + f"{'ws/zmq':>10}{'ws/gateway':>12}")
    for m in ['latency', *(f'rate@{k}' for k in windows)]:
        scale, unit = (1e3, 'ms') if m=='latency' else (1, 'req/s')
        v = [med[(m, n)] for n in names]
        print(f'{m+" ("+unit+")":<16}' + ''.join(f'{x*scale:>12,.1f}' for x in v) + f'{v[1]/v[0]:>10.2f}{v[1]/v[-1]:>12.2f}')
    print('GatewayKernelClient, 100 execute(reply=True) at once on one client, replies that came back: ' + ', '.join(f'{g}/100' for g in lost))
    for how, ts in fails.items(): print(f'pending requests failed after {how}: ' + ', '.join(f'{t:.2f} s' for t in ts))

if __name__=='__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='a smoke run')
    asyncio.run(main(p.parse_args().quick))
