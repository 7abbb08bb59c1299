"The fast decoder gives exactly what `Session.deserialize` gives, for every message a real kernel sends, and refuses what it refuses."
import asyncio
import pytest
from jupyter_client.session import Session
from conkernelclient.local import _Decoder, _DELIM as DELIM
from conftest import kernel, run

pytestmark = pytest.mark.timeout(120)

CODE = '''
import sys, time
print("out"); print("err", file=sys.stderr)
from IPython.display import display, HTML, Markdown, update_display, clear_output
display(HTML("<b>x</b>"), display_id="d"); update_display(Markdown("*y*"), display_id="d")
clear_output(wait=True)
x = input("name? ")
{"a": [1, 2.5, None, "2026-01-02T03:04:05Z"]}
'''

def reference(key, frames):
    s = Session(key=key)
    return s.deserialize(s.feed_identities(frames)[1])

def test_identical_to_session_deserialize_for_every_message_type():
    async def main():
        async with kernel() as (km, kc):
            seen = []
            orig = kc._parser
            def record(frames): seen.append(list(frames)); return orig(frames)
            kc._parser = record
            await kc.execute(CODE, on_input=lambda p, pw: 'me', outputs=True, timeout=20)
            await kc.execute('1/0', outputs=True, timeout=20)
            await asyncio.gather(kc.kernel_info(reply=True, timeout=10), kc.complete('pri', reply=True, timeout=10),
                                 kc.inspect('print', reply=True, timeout=10), kc.history(hist_access_type='tail', n=2, reply=True, timeout=10),
                                 kc.is_complete('x', reply=True, timeout=10), kc.comm_info(reply=True, timeout=10),
                                 kc.control_request('usage_request', timeout=10), kc.interrupt(timeout=10))
            await asyncio.sleep(0.3)
            key = kc.session.key
            types = set()
            for frames in seen:
                ours, ref = _Decoder(Session(key=key))(frames), reference(key, frames)
                assert ours == ref, ref['msg_type']
                assert {k: type(v) for k, v in ours['header'].items()} == {k: type(v) for k, v in ref['header'].items()}
                assert ours['header']['date'].tzinfo == ref['header']['date'].tzinfo
                types.add(ours['msg_type'])
            expected = {'status', 'execute_input', 'stream', 'display_data', 'update_display_data', 'clear_output', 'execute_result',
                        'error', 'execute_reply', 'input_request', 'kernel_info_reply', 'complete_reply', 'inspect_reply',
                        'history_reply', 'is_complete_reply', 'comm_info_reply', 'usage_reply', 'interrupt_reply'}
            assert expected <= types, expected - types
    run(main())

def test_refuses_exactly_what_session_refuses():
    key = b'k'
    s = Session(key=key)
    good = [b'ident', *s.serialize(s.msg('execute_request', {'code': '1'}))]
    assert _Decoder(Session(key=key))(good) == reference(key, good)
    i = good.index(DELIM)
    tampered = good[:i+5] + [good[i+5].replace(b'1', b'2')]
    unsigned = good[:i+1] + [b''] + good[i+2:]
    for bad, text in [(tampered, 'Invalid Signature'), (unsigned, 'Unsigned Message')]:
        with pytest.raises(ValueError, match=text): _Decoder(Session(key=key))(bad)
        with pytest.raises(ValueError, match=text): reference(key, bad)
    replay = _Decoder(Session(key=key))
    replay(good)
    with pytest.raises(ValueError, match='Duplicate Signature'): replay(good)
    with pytest.raises(ValueError): _Decoder(Session(key=key))([b'no delimiter'])

def test_replay_guard_stays_bounded():
    s = Session(key=b'k', digest_history_size=100)
    dec = _Decoder(s)
    for i in range(1000): dec([*s.serialize(s.msg('status', {'execution_state': 'idle', 'n': i}))])
    assert len(s.digest_history) <= 100

def test_messages_sharing_a_parent_get_their_own_parent_dicts():
    s = Session(key=b'k')
    parent = s.msg_header('execute_request')
    dec = _Decoder(Session(key=b'k'))
    a, b = [dec([*s.serialize(s.msg(t, dict(execution_state='idle') if t=='status' else {}, parent=parent))]) for t in ('status', 'execute_reply')]
    assert a['parent_header'] == b['parent_header'] and a['parent_header'] is not b['parent_header']
    a['parent_header']['msg_id'] = 'changed'
    assert b['parent_header']['msg_id'] == parent['msg_id']
