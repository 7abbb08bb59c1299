"""Before/after: the ZMQ client's hot path in two source trees, on the tiny kernel, in fresh processes, rounds interleaved.

Run: `.venv/bin/python bench/ab.py OLD_TREE NEW_TREE [--rounds 8]`, each tree a directory holding a `conkernelclient/` package
(e.g. `git archive <commit> conkernelclient | tar -x -C /tmp/old`). Who runs first alternates between rounds: the second
process of a pair otherwise pays for the first one's kernel shutdown. Prints medians of requests/s with 100 in flight,
client CPU per request, and one request's latency, and the new/old ratios. Read the ratios against the spread shown."""
import argparse, json, os, statistics, subprocess, sys

RUN = r'''
import asyncio, json, time
from jupyter_client.session import Session
import conkernelclient
from conkernelclient.tinykernel import tiny_manager
async def main():
    km = tiny_manager(session=Session(key=b'ab')); await km.start_kernel()
    kc = await km.client().start_channels()
    for _ in range(3): await asyncio.gather(*[kc.execute('', reply=True, timeout=30) for _ in range(100)])
    t0, c0, n = time.perf_counter(), time.process_time(), 0
    while n < 3000:
        await asyncio.gather(*[kc.execute('', reply=True, timeout=30) for _ in range(100)]); n += 100
    rate, cpu = n/(time.perf_counter()-t0), (time.process_time()-c0)/n*1e6
    lat = []
    for _ in range(300):
        t = time.perf_counter(); await kc.execute('', reply=True, timeout=30); lat.append(time.perf_counter()-t)
    print(json.dumps(dict(src=conkernelclient.__file__, rate=rate, cpu=cpu, lat=statistics.median(lat)*1e6)))
    await kc.astop_channels(); await km.shutdown_kernel(now=True)
import statistics
asyncio.run(main())
'''

METRICS = (('rate', 'req/s at 100 in flight', ',.0f'), ('cpu', 'µs client CPU per request', ',.0f'), ('lat', 'µs latency', ',.0f'))

def once(tree, run=RUN):
    "One measurement in a fresh interpreter importing the package from `tree`, running `run` (which prints a JSON line)."
    out = subprocess.run([sys.executable, '-c', run], env={**os.environ, 'PYTHONPATH': tree}, capture_output=True, text=True, cwd='/tmp', timeout=300)
    if out.returncode: raise RuntimeError(out.stderr[-3000:])
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res['src'].startswith(os.path.abspath(tree)), f'{tree} was not the package imported: {res["src"]}'
    return res

def main(old, new, rounds, run=RUN, metrics=METRICS):
    "Alternate `run` in the two trees for `rounds` rounds; print each metric's medians, spreads and new/old ratio."
    trees, res = dict(old=old, new=new), dict(old=[], new=[])
    for r in range(rounds):
        for k in (['old', 'new'] if r % 2 == 0 else ['new', 'old']): res[k].append(once(trees[k], run))
    for m, unit, fmt in metrics:
        o, n = (statistics.median(x[m] for x in res[k]) for k in ('old', 'new'))
        spread = lambda k: f'{min(x[m] for x in res[k]):{fmt}}-{max(x[m] for x in res[k]):{fmt}}'
        print(f'{unit:<32} old {o:>8{fmt}} ({spread("old")})  new {n:>8{fmt}} ({spread("new")})  new/old {n/o:.3f}')

if __name__=='__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('old'); p.add_argument('new'); p.add_argument('--rounds', type=int, default=8)
    a = p.parse_args()
    main(a.old, a.new, a.rounds)
