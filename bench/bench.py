"""Benchmark: this library against a raw pyzmq floor and vanilla `AsyncKernelClient`, on a tiny instant kernel and on ipykernel.

Run: `.venv/bin/python bench/bench.py` (about 8 minutes; `--quick` for a smoke run of a few seconds).
Contenders are interleaved in every round and each figure is the median over rounds; ratios are against the floor measured in
the same run. These machines are noisy: read the ratios, not the absolute numbers.

Contenders: `floor` (bench/floor.py: raw pyzmq that signs, verifies and JSON-parses, and reads shell and iopub), `ours`
(ConKernelClient) and `vanilla` (jupyter_client's AsyncKernelClient, one request at a time: it cannot have more in flight).
Metrics: `latency`, one request alone; `rate@k` and `cpu@k`, requests per second and client CPU per request with k in flight;
`N at once`, N requests sent in one go (time, client CPU per request, peak memory growth, replies lost), each in a fresh process."""
import argparse, asyncio, json, os, resource, statistics, subprocess, sys, time
from pathlib import Path
from jupyter_client import AsyncKernelClient
from jupyter_client.session import Session
sys.path.insert(0, str(Path(__file__).parent))
from floor import FloorClient
from conkernelclient import ConKernelManager
from conkernelclient.tinykernel import tiny_manager

KEY = b'bench-key'

def rss_mb(): return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])/1024

def peak_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024

def manager(kernel:str):
    "A manager for `kernel`: 'tiny' or 'ipykernel'."
    return tiny_manager(session=Session(key=KEY)) if kernel=='tiny' else ConKernelManager(session=Session(key=KEY))

# Each contender: an object with `send()` returning an awaitable reply, and `stop()`.
class Ours:
    def __init__(self, kc): self.kc = kc
    def send(self): return self.kc.execute('', reply=True)
    async def stop(self): await self.kc.astop_channels()

class Vanilla(Ours):
    def send(self): return self.kc.execute('', reply=True)
    async def stop(self): self.kc.stop_channels()

class Floor:
    def __init__(self, fc): self.fc = fc
    def send(self): return self.fc.send('')
    async def stop(self): await self.fc.stop()

async def connect(name, km):
    "A started contender `name` on `km`'s kernel."
    if name=='ours': return Ours(await km.client().start_channels())
    info = km.get_connection_info(session=False)
    if name=='floor': return Floor(await FloorClient(info, KEY, rcvhwm=0).start())  # no HWM: a correct client loses no reply
    kw = km.get_connection_info(session=True)
    for k in ('curve_publickey', 'curve_secretkey'):
        if isinstance(kw.get(k), str): kw[k] = kw[k].encode()
    vc = AsyncKernelClient(**kw); vc.start_channels(); await vc.wait_for_ready(timeout=60)
    return Vanilla(vc)

async def latency(c, n):
    "Median seconds of one request alone."
    times = []
    for _ in range(n):
        t0 = time.perf_counter(); await c.send(); times.append(time.perf_counter()-t0)
    return statistics.median(times)

async def window(c, total, k, timeout:float=60):
    "Send `total` requests keeping `k` in flight, within `timeout` seconds; (requests/s, client CPU s per request)."
    loop, done, state = asyncio.get_running_loop(), None, dict(sent=0, got=0)
    done = loop.create_future()
    def fire():
        state['sent'] += 1
        asyncio.ensure_future(c.send()).add_done_callback(back)
    def back(f):
        f.result()
        state['got'] += 1
        if state['got']==total: done.set_result(None)
        elif state['sent'] < total: fire()
    t0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(min(k, total)): fire()
    await asyncio.wait_for(done, timeout)
    return total/(time.perf_counter()-t0), (time.process_time()-cpu0)/total

async def burst(name, kernel, n):
    "In a fresh process' state: `n` requests at once; seconds, CPU per request, RSS growth, replies lost."
    km = manager(kernel); await km.start_kernel()
    try:
        c = await connect(name, km)
        await window(c, 200, 10)  # warm up
        base = rss_mb(); t0, cpu0 = time.perf_counter(), time.process_time()
        futs = [asyncio.ensure_future(c.send()) for _ in range(n)]
        done, pending = await asyncio.wait(futs, timeout=60)
        res = dict(secs=time.perf_counter()-t0, cpu=(time.process_time()-cpu0)/n, rss=peak_mb()-base, lost=len(pending))
        for f in pending: f.cancel()
        await c.stop()
        return res
    finally: await km.shutdown_kernel(now=True)

def burst_in_subprocess(name, kernel, n):
    "Run `burst` in a fresh interpreter, so peak memory is this contender's alone."
    out = subprocess.run([sys.executable, __file__, '--burst', name, kernel, str(n)], capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])

async def rounds(kernel, names, rounds, windows, total, lat_n):
    "Interleaved rounds on one kernel; {(metric, name): [values]}."
    km = manager(kernel); await km.start_kernel()
    res = {}
    try:
        cs = {n: await connect(n, km) for n in names}
        for r in range(rounds):
            for n, c in cs.items():
                res.setdefault(('latency', n), []).append(await latency(c, lat_n))
                if n=='vanilla': continue  # vanilla cannot have several requests in flight
                for k in windows:
                    rate, cpu = await window(c, total if k < 1000 else total*2, k)
                    res.setdefault((f'rate@{k}', n), []).append(rate)
                    res.setdefault((f'cpu@{k}', n), []).append(cpu)
        for c in cs.values(): await c.stop()
    finally: await km.shutdown_kernel(now=True)
    return res

def table(kernel, res, bursts, n_burst):
    "Print medians and ratios against the floor."
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f'\n## {kernel} kernel')
    print(f"{'metric':<26}{'floor':>12}{'ours':>12}{'vanilla':>12}{'ours/floor':>12}")
    for metric in sorted({m for m, _ in med}, key=lambda m: (m.split('@')[0], int(m.split('@')[1]) if '@' in m else 0)):
        f, o, v = (med.get((metric, n)) for n in ('floor', 'ours', 'vanilla'))
        unit, scale = {'latency': ('µs', 1e6), 'rate': ('req/s', 1), 'cpu': ('µs/req', 1e6)}[metric.split('@')[0]]
        fmt = lambda x: '' if x is None else f'{x*scale:,.0f}'
        print(f"{metric+' ('+unit+')':<26}{fmt(f):>12}{fmt(o):>12}{fmt(v):>12}{o/f if f and o else 0:>12.2f}")
    for key in ('secs', 'cpu', 'rss', 'lost'):
        f, o = (statistics.median(b[key] for b in bursts[n]) for n in ('floor', 'ours'))
        unit, scale = dict(secs=('s', 1), cpu=('µs/req', 1e6), rss=('MB', 1), lost=('replies', 1))[key]
        print(f"{f'{n_burst:,} at once: '+key+' ('+unit+')':<30}{f*scale:>8,.2f}{o*scale:>12,.2f}{'':>12}{o/f if f else 0:>12.2f}")

async def main(quick):
    names = ['floor', 'ours', 'vanilla']
    cfg = dict(rounds=1, windows=[1, 100], total=300, lat_n=30) if quick else dict(rounds=3, windows=[1, 10, 100, 1000], total=3000, lat_n=200)
    for kernel in ('tiny', 'ipykernel'):
        k_cfg = cfg if kernel=='tiny' or quick else dict(cfg, total=1000, lat_n=100)
        res = await rounds(kernel, names, **k_cfg)
        # ipykernel 7.4 stalls with about 4,000 requests queued at once (every client, the floor included, then loses nearly all
        # replies), so on ipykernel the burst is 2,000, the most it takes
        n_burst = 1000 if quick else 10_000 if kernel=='tiny' else 2000
        bursts = {n: [] for n in ('floor', 'ours')}
        for _ in range(1 if quick else 3):
            for n in bursts: bursts[n].append(burst_in_subprocess(n, kernel, n_burst))
        table(kernel, res, bursts, n_burst)

if __name__=='__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='a smoke run of a few seconds')
    p.add_argument('--burst', nargs=3, metavar=('NAME', 'KERNEL', 'N'), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.burst: print(json.dumps(asyncio.run(burst(a.burst[0], a.burst[1], int(a.burst[2])))))
    else: asyncio.run(main(a.quick))
