"""The floor: a minimal hand-written pyzmq client, written for this benchmark.

It does what any correct client must do per message and nothing else: it signs requests (HMAC-SHA256), verifies the signature
of every message it reads, JSON-parses header, parent and content, files one future per msg_id, and reads iopub as well as shell.
It parses no dates, keeps no inboxes, and handles no errors beyond a bad signature."""
import asyncio, hashlib, hmac, json, uuid
from datetime import datetime, timezone
import zmq, zmq.asyncio

DELIM, NOBLOCK = b"<IDS|MSG>", int(zmq.NOBLOCK)

class FloorClient:
    "Shell and iopub sockets, and a dict of msg_id to future."
    def __init__(self, conn:dict, key:bytes, rcvhwm:int|None=None):
        self.key, self.session, self.pending, self.iopub_seen = key, uuid.uuid4().hex, {}, 0
        self.ctx = zmq.asyncio.Context()
        self.shell, self.iopub = self.ctx.socket(zmq.DEALER), self.ctx.socket(zmq.SUB)
        for s in (self.shell, self.iopub):
            if conn.get('curve_publickey'):
                s.curve_serverkey = conn['curve_publickey'].encode() if isinstance(conn['curve_publickey'], str) else conn['curve_publickey']
                s.curve_publickey, s.curve_secretkey = zmq.curve_keypair()
        self.shell.identity = self.session.encode()
        if rcvhwm is not None: self.shell.rcvhwm = self.iopub.rcvhwm = rcvhwm
        url = f"{conn['transport']}://{conn['ip']}:"
        self.shell.connect(url + str(conn['shell_port'])); self.iopub.connect(url + str(conn['iopub_port']))
        self.iopub.setsockopt(zmq.SUBSCRIBE, b'')

    def sign(self, parts): return hmac.new(self.key, b''.join(parts), hashlib.sha256).hexdigest().encode()

    def send(self, code:str=''):
        "Send an execute_request now; a future of its reply."
        mid = uuid.uuid4().hex
        header = dict(msg_id=mid, session=self.session, username='floor', date=datetime.now(timezone.utc).isoformat(),
                      msg_type='execute_request', version='5.3')
        content = dict(code=code, silent=False, store_history=False, user_expressions={}, allow_stdin=False, stop_on_error=True)
        parts = [json.dumps(header).encode(), b'{}', b'{}', json.dumps(content).encode()]
        fut = self.pending[mid] = asyncio.get_running_loop().create_future()
        self.shell.send_multipart([DELIM, self.sign(parts), *parts])
        return fut

    def parse(self, frames):
        "Verified header, parent and content of a message."
        i = frames.index(DELIM)
        sig, parts = frames[i+1], frames[i+2:i+6]
        if not hmac.compare_digest(sig, self.sign(parts)): raise ValueError('bad signature')
        return json.loads(parts[0]), json.loads(parts[1]), json.loads(parts[3])

    async def read(self, sock, on_msg):
        "Read `sock` for ever, draining everything queued on each wake-up through a synchronous shadow."
        sync = zmq.Socket.shadow(sock.underlying)
        while True:
            on_msg(*self.parse(await sock.recv_multipart()))
            while True:
                try: frames = sync.recv_multipart(NOBLOCK)
                except zmq.Again: break
                on_msg(*self.parse(frames))

    def on_reply(self, header, parent, content):
        "Resolve the waiting future with the reply: what was parsed of it, as any client would return."
        fut = self.pending.pop(parent.get('msg_id'), None)
        if fut is not None and not fut.done(): fut.set_result(dict(header=header, parent_header=parent, content=content))

    def on_iopub(self, header, parent, content): self.iopub_seen += 1

    async def start(self, timeout=30):
        "Start the readers and wait until the kernel answers (and iopub is subscribed)."
        self.tasks = [asyncio.ensure_future(self.read(self.shell, self.on_reply)), asyncio.ensure_future(self.read(self.iopub, self.on_iopub))]
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            seen = self.iopub_seen
            try: await asyncio.wait_for(self.send(''), 1)
            except TimeoutError: continue
            await asyncio.sleep(0.05)
            if self.iopub_seen > seen: break
            if asyncio.get_running_loop().time() > deadline: raise TimeoutError('kernel did not answer')
        return self

    async def stop(self):
        for t in self.tasks: t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.ctx.destroy(linger=0)
