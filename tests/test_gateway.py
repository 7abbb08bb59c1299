"Enterprise Gateway 3.3, in a venv of its own (it pins jupyter_client<7): the remote client works through it too."
import asyncio, getpass
import pytest
from conkernelclient import KernelRestartedError
from conftest import run
from servers import eg_venv, enterprise_gateway, remote_kernel, stop

pytestmark = pytest.mark.timeout(300)

@pytest.fixture(scope='module')
def gateway(tmp_path_factory):
    venv, why = eg_venv()
    if venv is None: pytest.skip(why)  # reported with its reason, never silent
    proc, url, token = enterprise_gateway(tmp_path_factory.mktemp('eg'), venv)
    yield url, token
    stop(proc)

def test_enterprise_gateway_start_100_concurrent_interrupt_restart_shutdown(gateway):
    url, token = gateway
    user = 'tester' if getpass.getuser()=='root' else getpass.getuser()  # EG refuses kernels for root by default
    async def main():
        async with remote_kernel(url, token, km_kw=dict(env=dict(KERNEL_USERNAME=user))) as (km, kc):
            assert kc._ws.v1  # EG offers the v1 subprotocol
            futs = [kc.execute(f'x = {i}', user_expressions=dict(v='x+1'), reply=True, timeout=60) for i in range(100)]
            assert [r['content']['user_expressions']['v']['data']['text/plain'] for r in await asyncio.gather(*futs)] == [str(i+1) for i in range(100)]
            res = await kc.execute('print("through the gateway")', outputs=True, timeout=30)
            assert [o.text for o in res.outputs] == ['through the gateway\n']
            long = kc.execute('print("go", flush=True); import time; time.sleep(30)', outputs=True, timeout=60)
            while not any(m['msg_type'] == 'stream' for m in long.request.msgs): await asyncio.sleep(0.01)  # running its code: see test_transports
            await km.interrupt_kernel()
            assert (await asyncio.wait_for(long, 15)).reply['content']['ename'] == 'KeyboardInterrupt'
            pending = kc.execute('import time; time.sleep(30)', reply=True, timeout=60)
            await asyncio.sleep(0.3)
            await km.restart_kernel()
            with pytest.raises(KernelRestartedError): await pending
            assert (await kc.execute('1+1', reply=True, timeout=30))['content']['status'] == 'ok'
        assert not await km.is_alive()  # shut down: the gateway no longer has it
    run(main(), timeout=240)
