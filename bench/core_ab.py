"""Before/after for the core alone: what routing costs the client per request, without a transport or a kernel.

Run: `.venv/bin/python bench/core_ab.py OLD_TREE NEW_TREE [--rounds 10]` (trees as for `bench/ab.py`). Each round, in a fresh
interpreter per tree (alternating who goes first), files 100 requests at a time (`execute(reply=True)`) on a client whose channels
record what they send, times filing and sending them, hands the router each request's reply, `busy` and `idle` status (pre-built message dicts, as a transport's
decoder would), and awaits the replies; 20,000 requests. Prints the median client CPU per request and the new/old ratio: with the
transport and kernel out of the picture, the noise of a loaded machine shrinks to a few percent."""
import argparse, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
import ab

RUN = r'''
import asyncio, json, time
from jupyter_client.session import Session
import conkernelclient
from conkernelclient.core import ConKernelClient

class Channel:
    "A channel that keeps what it sends."
    inbox = None
    def __init__(self): self.sent = []
    def send(self, msg): self.sent.append(msg)

async def main(n=20000, batch=100):
    kc = ConKernelClient()
    chans = {name: Channel() for name in ('shell', 'control', 'iopub', 'stdin')}
    for name, ch in chans.items(): setattr(kc, f'_{name}_channel', ch)
    kc._spawn_routers = lambda handlers: setattr(kc, '_h', handlers)
    kc._connect_channels = lambda: None
    async def alive(): return True
    kc._kernel_alive = alive
    kc._open(asyncio.get_running_loop())
    kernel = Session()
    kc._kernel_session = kernel.session
    h, boxes = kc._h, kc._inboxes
    def answer(req):
        "A kernel's reply and statuses to `req`, as message dicts."
        msg = lambda t, c: {**kernel.msg(t, c, parent=req), 'buffers': []}
        return msg('status', dict(execution_state='busy')), msg('execute_reply', dict(status='ok', execution_count=1)), msg('status', dict(execution_state='idle'))
    # the kernel's answers are built outside the timed part: they would be the transport's work
    cpu = send = 0.
    for _ in range(n//batch):
        c0 = time.process_time()
        futs = [kc.execute('', reply=True, timeout=30) for _ in range(batch)]
        send += time.process_time()-c0
        answers = [answer(m) for m in chans['shell'].sent]; chans['shell'].sent.clear()
        c0 = time.process_time()
        for busy, reply, idle in answers:
            h['iopub'](busy, boxes['iopub']); h['shell'](reply, boxes['shell']); h['iopub'](idle, boxes['iopub'])
        await asyncio.gather(*futs)
        cpu += time.process_time()-c0
    print(json.dumps(dict(src=conkernelclient.__file__, route=cpu/n*1e6, send=send/n*1e6)))
asyncio.run(main())
'''

if __name__=='__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('old'); p.add_argument('new'); p.add_argument('--rounds', type=int, default=10)
    a = p.parse_args()
    ab.main(a.old, a.new, a.rounds, RUN, (('route', 'µs CPU routing a request', '.1f'), ('send', 'µs CPU filing and sending one', '.1f')))
