"Regression tests for the core's findings of issue 'Hardening' (14, 15, 16, 18): one test per finding, on real kernels."
import asyncio, time
import pytest
from jupyter_client.session import Session
from conkernelclient import ConKernelClient, ConKernelManager, KernelRestartedError, RequestTimeoutError
from conkernelclient.core import _janitors
from conkernelclient.tinykernel import tiny_manager
from conftest import kernel, run, settled

pytestmark = pytest.mark.timeout(120)
deaf_tiny = lambda **kw: tiny_manager(interrupt_mode='message', **kw)  # in `%input` it hears no interrupt at all: only an answer ends it

async def until(cond, timeout=10):
    "Whether `cond()` holds within `timeout` seconds (polled: what it reads has no event of its own)."
    for _ in range(int(timeout/0.02)):
        if cond(): return True
        await asyncio.sleep(0.02)
    return cond()

async def answers(kc, timeout=30):
    "The kernel, done with what it had, answers `kc` again."
    await kc.until_idle(timeout=timeout)
    return (await kc.execute('1', reply=True, timeout=timeout))['content']['status']

@pytest.mark.parametrize('make,code', [(None, 'import time; time.sleep(0.5); print(input("?"))'), (deaf_tiny, '%sleep 0.5\n%input')],
                         ids=['ipykernel', 'tiny-deaf-to-interrupts'])
def test_14_a_stopped_clients_late_input_is_ended_and_the_next_client_is_served(make, code):
    "The request asks for input after its client stopped: the kernel asks the stopped client's connection, which nobody would answer."
    async def main():
        async with kernel(clients=0, **({} if make is None else dict(make=make))) as (km,):
            leaving = await km.client().start_channels()
            leaving.execute(code, on_input=lambda prompt, password: 'never asked', reply=True)
            leaving.stop_channels()
            assert leaving in km._janitors  # the manager holds its janitor
            t0 = time.monotonic()
            newcomer = await asyncio.wait_for(km.client().start_channels(), 30)  # its kernel_info waits behind that input()
            assert (await newcomer.execute('1', reply=True, timeout=30))['content']['status'] == 'ok'
            print(f'\nnext client served {time.monotonic()-t0:.2f} s after the stop')
            assert await until(lambda: leaving not in km._janitors)  # its request replied: the janitor let go
            await newcomer.astop_channels()
    run(main())

def test_14_an_attached_clients_janitor_is_held_by_the_module_and_ends_with_the_request():
    async def main():
        async with kernel() as (km, kc):
            att = ConKernelClient(connection_file=km.connection_file); att.load_connection_file()
            await asyncio.wait_for(att.start_channels(), 30)
            att.execute('import time; time.sleep(0.3); input("?")', on_input=lambda p, pw: 'x', reply=True)
            att.stop_channels()
            assert att in _janitors
            assert await until(lambda: att not in _janitors)  # its request ended: the janitor let go
            assert await answers(kc) == 'ok'
    run(main())

def test_14_shutting_the_kernel_down_ends_a_janitor_that_still_waits():
    async def main():
        km = tiny_manager(session=Session(key=b'x')); await km.start_kernel()
        kc = await km.client().start_channels()
        kc.execute('%sleep 30\n%input', on_input=lambda p, pw: 'x', reply=True)
        kc.stop_channels()
        assert kc in km._janitors
        await km.shutdown_kernel(now=True)
        assert not km._janitors and all(t.done() or t.cancelling() for t in kc._vital)
        await asyncio.gather(*kc._vital, return_exceptions=True)
    run(main())

def test_15_a_msg_id_the_kernel_may_still_answer_is_refused_then_free_again():
    "A retry that reused the msg_id of a request that timed out got the first request's outputs."
    async def main():
        async with kernel() as (km, kc):
            with pytest.raises(RequestTimeoutError): await kc.execute('import time; time.sleep(0.5); print("first")', msg_id='retry', outputs=True, timeout=0.1)
            with pytest.raises(ValueError, match='may still be answering'): kc.execute('print("second")', msg_id='retry', outputs=True, timeout=10)
            await kc.until_idle(timeout=10)
            res = await kc.execute('print("second")', msg_id='retry', outputs=True, timeout=10)
            assert res.outputs[0].text == 'second\n' and res.reply['parent_header']['msg_id'] == 'retry'
    run(main())

def test_15_a_request_refused_before_it_was_sent_leaves_its_msg_id_free():
    "A request that reused the msg_id of one refused while unsent was accepted, and its reply then dropped: it waited for ever."
    async def main():
        async with kernel() as (km, kc):
            with pytest.raises(ValueError, match='JSON'): kc.shell_request('execute_request', code=object(), msg_id='refused')  # fails as it is serialised
            reply = await kc.execute('1', msg_id='refused', reply=True, timeout=10)
            assert reply['parent_header']['msg_id'] == 'refused' and settled(kc)
            restart = asyncio.ensure_future(km.restart_kernel(now=True))
            while not km.restarting: await asyncio.sleep(0.001)
            with pytest.raises(KernelRestartedError): kc.execute('1', msg_id='during', reply=True, timeout=10)
            await asyncio.wait_for(restart, 60)
            assert (await kc.execute('1', msg_id='during', reply=True, timeout=10))['parent_header']['msg_id'] == 'during'
    run(main())

def test_16_a_pool_whose_create_times_out_still_deletes_the_subshell_the_kernel_makes():
    async def main():
        async with kernel() as (km, kc):
            with pytest.raises(RequestTimeoutError):
                async with kc.subshells(2, timeout=0.0001): pass
            assert await kc.list_subshells() == []  # control runs in order: any create is done by now, and was deleted
    run(main())

def test_18_interrupts_during_a_restart_are_refused_and_the_new_kernel_lives():
    "An interrupt 20 ms into a restart reached the new kernel while it imported its modules, and killed it."
    async def main():
        async with kernel() as (km, kc):
            restart = asyncio.ensure_future(km.restart_kernel(now=True))
            while not km.restarting: await asyncio.sleep(0)
            refused = sent = 0
            while not restart.done():  # interrupts all through the restart, through the client and the manager alike
                for interrupt in (lambda: kc.interrupt(reply=False), km.interrupt_kernel):
                    try:
                        res = interrupt()
                        if asyncio.iscoroutine(res): await res
                        sent += 1
                    except KernelRestartedError: refused += 1
                await asyncio.sleep(0.005)
            await restart
            print(f'\n{refused} interrupts refused during the restart, {sent} sent')
            assert refused > 5 and sent == 0 and await km.is_alive()
            assert (await kc.execute('1', reply=True, timeout=30))['content']['status'] == 'ok'
            other = await asyncio.wait_for(km.client().start_channels(), 30)
            await other.astop_channels()
    run(main())

def test_a_cancel_between_the_loops_runs_sets_off_its_interrupt_on_the_clients_loop():
    "Sync code between the loop's runs (nbclient's way of driving it) cancels a wait: the interrupt that cancel sets off runs on the client's own loop."
    loop = asyncio.new_event_loop()
    km = ConKernelManager()
    def go(coro, timeout=30): return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    go(km.start_kernel(), 60)
    try:
        async def start(): return await km.client().start_channels()
        kc = go(start(), 60)
        async def send(): return kc.execute('print("go", flush=True); import time; time.sleep(30)', outputs=True, on_timeout='interrupt')
        wait = go(send())
        # running its code, not just dispatched: a SIGINT that lands before ipykernel runs the code is lost (the protocol's race)
        async def printed():
            while not any(m['msg_type']=='stream' for m in wait.request.msgs): await asyncio.sleep(0.01)
        go(printed(), 10)
        wait.cancel()  # outside the loop: what it sets off must not land on some other loop, where it would never run
        assert kc._side and all(t.get_loop() is loop for t in kc._side)
        t = time.monotonic()
        assert go(kc.execute('1', reply=True, timeout=10))['content']['status'] == 'ok'  # the sleep was interrupted
        print(f'\na wait cancelled between the loop\'s runs: the next request was answered {time.monotonic()-t:.2f} s later')
        go(kc.astop_channels())
    finally:
        go(km.shutdown_kernel(now=True))
        loop.close()
