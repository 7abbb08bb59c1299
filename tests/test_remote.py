"What only a remote kernel has: a server's REST API and token, a websocket that drops, a server that stops, rate limits."
import asyncio, logging, shutil, subprocess, time
import pytest
from conkernelclient import DeadKernelError, KernelRestartedError
from conkernelclient.remote import AuthenticationError, RemoteKernelManager, ServerError
from conftest import run
from servers import jupyter_server, remote_kernel, running_requests, sockets_to, stop, until, until_no_sockets

pytestmark = pytest.mark.timeout(120)

def test_manager_rest_api_and_attaching_by_id(server):
    url, token = server
    async def main():
        async with remote_kernel(url, token) as (km, kc):
            assert km.kernel_id in {k['id'] for k in await km.list_kernels()}
            assert (await km.kernel_model())['name'] == 'python3' and await km.is_alive()
            await kc.execute('shared = 42', reply=True, timeout=10)
            other = RemoteKernelManager(url, token=token, kernel_id=km.kernel_id)
            kc2 = await asyncio.wait_for(other.client().start_channels(), 30)
            r = await kc2.execute('', user_expressions=dict(v='shared'), reply=True, timeout=10)
            assert r['content']['user_expressions']['v']['data']['text/plain'] == '42'
            await kc2.astop_channels()
        assert not await km.is_alive()  # shut down: the server no longer has it
    run(main())

def test_wrong_token_unknown_kernel_and_bad_url_raise_clearly(server, caplog):
    url, token = server
    caplog.set_level(logging.DEBUG)
    async def main():
        bad = RemoteKernelManager(url, token='not-the-token')
        with pytest.raises(AuthenticationError, match='refused the token'): await bad.start_kernel()
        async with remote_kernel(url, token) as (km, kc):
            intruder = RemoteKernelManager(url, token='not-the-token', kernel_id=km.kernel_id)
            with pytest.raises(AuthenticationError, match='HTTP 403'): await asyncio.wait_for(intruder.client().start_channels(), 30)
        with pytest.raises(ServerError, match='404') as e: await RemoteKernelManager(url, token=token, kernel_id='no-such-kernel').client().start_channels()
        assert e.value.status == 404
        with pytest.raises(ServerError, match='cannot reach'): await RemoteKernelManager('http://127.0.0.1:9', token=token).list_kernels()
        with pytest.raises(ValueError, match='http'): RemoteKernelManager('ftp://x', token=token)
        with pytest.raises(RuntimeError, match='start_kernel'): await RemoteKernelManager(url, token=token).interrupt_kernel()
        with pytest.raises(RuntimeError, match='start_kernel'): RemoteKernelManager(url, token=token).client().start_channels()
    run(main())
    assert token not in caplog.text and 'not-the-token' not in caplog.text

def test_token_from_the_environment(server, monkeypatch):
    url, token = server
    monkeypatch.setenv('JUPYTER_TOKEN', token)
    async def main(): assert isinstance(await RemoteKernelManager(url).list_kernels(), list)
    run(main())
    assert token not in repr(RemoteKernelManager(url))

def test_a_dropped_websocket_reconnects_and_the_server_replays_what_it_buffered(server):
    url, token = server
    async def main():
        async with remote_kernel(url, token) as (km, kc):
            running = kc.execute('import time; time.sleep(1); print("printed while disconnected")', outputs=True, timeout=30)
            await asyncio.sleep(0.3)
            kc._ws.conn.protocol.stream.close()  # the TCP connection drops, as through a proxy restart
            await asyncio.sleep(0.01)
            sent_while_down = kc.execute('print("sent while disconnected")', outputs=True, timeout=30)
            res = await running
            assert [o.text for o in res.outputs] == ['printed while disconnected\n']
            assert [o.text for o in (await sent_while_down).outputs] == ['sent while disconnected\n']
    run(main())

def test_kernel_deleted_by_another_client_fails_pending_within_rest_interval(server):
    url, token = server
    async def main():
        async with remote_kernel(url, token, rest_interval=0.5, watch_interval=0.02) as (km, kc):
            checks, ask = [], km.is_alive  # the client's REST check asks its manager
            async def is_alive(timeout=None):
                checks.append(time.monotonic())
                return await ask(timeout)
            km.is_alive = is_alive
            kc._shutting_down = lambda msg: None  # the kernel's own shutdown broadcast would tell first: this test is of the REST check
            pending = kc.execute('import time; time.sleep(60)', reply=True, timeout=120)  # pending: the REST check runs at once, then every rest_interval
            for _ in range(1000):
                if len(checks) >= 4: break
                await asyncio.sleep(0.01)
            gaps = [b-a for a, b in zip(checks, checks[1:])]
            assert max(gaps) < 1.5*kc.rest_interval, gaps  # the cadence: a slower one (or checks that stop) fails here
            await RemoteKernelManager(url, token=token, kernel_id=km.kernel_id).shutdown_kernel()
            t0 = time.monotonic()
            with pytest.raises(DeadKernelError, match='gone'): await asyncio.wait_for(pending, 10)
            took = time.monotonic()-t0
            print(f'\nkernel deleted: the pending request failed {took:.2f} s after the DELETE returned (rest_interval {kc.rest_interval} s)')
            assert took < 1.5*kc.rest_interval  # the next check saw it
            with pytest.raises(DeadKernelError): kc.execute('1')
    run(main())

def test_kernel_restarted_by_another_client_fails_pending_and_carries_on(server):
    url, token = server
    async def main():
        async with remote_kernel(url, token) as (km, kc):
            [pending] = await running_requests(kc)
            await RemoteKernelManager(url, token=token, kernel_id=km.kernel_id).restart_kernel()
            with pytest.raises(KernelRestartedError): await asyncio.wait_for(pending, 10)
            assert (await kc.execute('1+1', outputs=True, timeout=20)).status == 'ok'
    run(main())

def test_server_stopped_fails_pending_after_the_reconnect_window(tmp_path):
    proc, url, token = jupyter_server(tmp_path)
    async def main():
        async with remote_kernel(url, token, reconnect_timeout=1) as (km, kc):
            kc._shutting_down = lambda msg: None  # a stopping server shuts its kernels down, which say so first: this test is of the reconnection
            pending = await running_requests(kc, 10)
            t0 = time.monotonic()
            stop(proc)
            res = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 20)
            took = time.monotonic()-t0
            assert all(isinstance(r, DeadKernelError) and 'lost the connection' in str(r) for r in res), res
            print(f'\nserver stopped: 10 pending requests failed {took:.2f} s later (reconnect window 1 s)')
            with pytest.raises(DeadKernelError): kc.execute('1')
    try: run(main())
    finally: stop(proc)

def test_iopub_rate_limit_shows_the_servers_warning_and_the_request_completes(tmp_path):
    proc, url, token = jupyter_server(tmp_path, '--ServerApp.iopub_msg_rate_limit=50', '--ServerApp.rate_limit_window=1')
    async def main():
        async with remote_kernel(url, token) as (km, kc):
            res = await kc.execute('for i in range(500): print(i, flush=True)', outputs=True, timeout=30)
            text = ''.join(o.text for o in res.outputs)
            assert res.status == 'ok' and 'IOPub message rate exceeded' in text and '499\n' not in text
            print(f'\nrate limit 50 msgs/s: {text.count(chr(10))} lines reached the client, then the server warning')
            after = await kc.execute('print("after")', outputs=True, timeout=30)
            assert [o.text for o in after.outputs] == ['after\n']  # the limit resets once the kernel is idle
    try: run(main())
    finally: stop(proc)

def test_client_cycles_leave_no_tasks_or_connections(server):
    url, token = server
    async def main():
        async with remote_kernel(url, token) as (km, kc):
            async def cycle():
                c = await asyncio.wait_for(km.client().start_channels(), 30)
                await c.execute('1', reply=True, timeout=10)
                await c.astop_channels()
            tasks = asyncio.all_tasks()  # this test's own event loop: every task in it is the test's
            held = {c.laddr.port for c in sockets_to(url)}  # `kc`'s websocket
            assert len(held) == 1
            for _ in range(20): await cycle()
            await until(lambda: asyncio.all_tasks() - {asyncio.current_task()} == tasks)  # (less the polling task) a closing handshake may still be finishing
            await until_no_sockets(url, held)
    run(main())

def test_a_server_without_v1_gets_the_legacy_json_protocol(tmp_path):
    proc, url, token = jupyter_server(tmp_path, '--ZMQChannelsWebsocketConnection.kernel_ws_protocol=')
    async def main():
        async with remote_kernel(url, token) as (km, kc):
            assert kc.protocol == 'v1' and not kc._ws.v1  # offered v1, the server chose the legacy protocol
            futs = [kc.execute(f'print({i})', outputs=True, timeout=30) for i in range(20)]
            assert [r.outputs[0].text for r in await asyncio.gather(*futs)] == [f'{i}\n' for i in range(20)]
    try: run(main())
    finally: stop(proc)

def test_tls_certificates_are_verified_by_default(tmp_path):
    if not shutil.which('openssl'): pytest.skip('openssl is not installed: no self-signed certificate to serve')
    cert, key = tmp_path/'cert.pem', tmp_path/'key.pem'
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', str(key), '-out', str(cert), '-days', '1',
                    '-subj', '/CN=127.0.0.1'], check=True, capture_output=True, timeout=60)
    proc, url, token = jupyter_server(tmp_path, f'--ServerApp.certfile={cert}', f'--ServerApp.keyfile={key}')
    async def main():
        assert url.startswith('https://')
        with pytest.raises(ServerError, match='TLS verification'): await RemoteKernelManager(url, token=token).list_kernels()
        async with remote_kernel(url, token, km_kw=dict(validate_cert=False)) as (km, kc):  # trusted explicitly: REST and wss work
            assert (await kc.execute('print("over TLS")', outputs=True, timeout=30)).outputs[0].text == 'over TLS\n'
    try: run(main())
    finally: stop(proc)
