"""What the certainty of a cancel costs: requests held on the client until their shell is free (`submit`, `on_timeout='interrupt'`)
against requests sent at once, measured in the same run on the tiny kernel and on ipykernel.

Run: `.venv/bin/python bench/hold.py` (about a minute; `--quick` for a smoke run). Medians of interleaved rounds; read the ratios.
- latency: one request alone on a free shell, awaited (a held request is sent at once when nothing runs: no cost expected);
- 100 at once: the time for 100 requests sent together (held ones go one by one, each after the one before it replied)."""
import argparse, asyncio, statistics, sys, time
from pathlib import Path
from jupyter_client.session import Session
sys.path.insert(0, str(Path(__file__).parent))
from conkernelclient import ConKernelManager
from conkernelclient.tinykernel import tiny_manager

async def latency(kc, held:bool, n:int):
    "Median seconds of one request alone, `n` times."
    times = []
    for _ in range(n):
        t = time.perf_counter()
        if held: await kc.submit('').wait(30)
        else: await kc.execute('', reply=True, timeout=30)
        times.append(time.perf_counter()-t)
    return statistics.median(times)

async def at_once(kc, held:bool, n:int):
    "Seconds for `n` requests sent together, until the last has its answer."
    t = time.perf_counter()
    if held: await asyncio.gather(*[h.wait(60) for h in [kc.submit('') for _ in range(n)]])
    else: await asyncio.gather(*[kc.execute('', outputs=True, timeout=60) for _ in range(n)])
    return time.perf_counter()-t

async def measure(kernel:str, rounds:int, n:int):
    km = tiny_manager(session=Session(key=b'b')) if kernel=='tiny' else ConKernelManager(session=Session(key=b'b'))
    await km.start_kernel()
    kc = await km.client().start_channels()
    try:
        await at_once(kc, False, 100)  # warm
        res = {k: [] for k in ('lat sent', 'lat held', '100 sent', '100 held')}
        for r in range(rounds):
            for held in ((False, True) if r % 2 == 0 else (True, False)):
                res['lat held' if held else 'lat sent'].append(await latency(kc, held, n))
                res['100 held' if held else '100 sent'].append(await at_once(kc, held, 100))
        return {k: statistics.median(v) for k,v in res.items()}
    finally:
        await kc.astop_channels(); await km.shutdown_kernel(now=True)

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true')
    a = p.parse_args()
    rounds, n = (2, 10) if a.quick else (6, 100)
    print(f'{"kernel":<10}{"metric":<26}{"sent at once":>14}{"held":>14}{"held/sent":>12}')
    for kernel in ('tiny', 'ipykernel'):
        m = asyncio.run(measure(kernel, rounds, n))
        print(f'{kernel:<10}{"latency (ms)":<26}{m["lat sent"]*1e3:>14.2f}{m["lat held"]*1e3:>14.2f}{m["lat held"]/m["lat sent"]:>12.2f}')
        print(f'{kernel:<10}{"100 at once (s)":<26}{m["100 sent"]:>14.3f}{m["100 held"]:>14.3f}{m["100 held"]/m["100 sent"]:>12.2f}')

if __name__ == '__main__': main()
