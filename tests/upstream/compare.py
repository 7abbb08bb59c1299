"""Compare a baseline and a swapped junit XML from nbclient's suite (see README.md).

    python tests/upstream/compare.py BASELINE.xml SWAPPED.xml

Prints each run's counts and time, then every test that passes on baseline but fails swapped, with its
failure message and, for a hang, where it was stuck (the `ckc_stuck` property from swap_manager.py).
"""
import sys
import xml.etree.ElementTree as ET
from collections import Counter

def load(path):
    "({nodeid: (status, message, props)}, session seconds) from a pytest junit XML."
    root = ET.parse(path).getroot()
    suite = root if root.tag == 'testsuite' else root.find('testsuite')
    out = {}
    for tc in suite.iter('testcase'):
        parts = tc.get('classname', '').split('.')
        i = next((i for i, x in enumerate(parts) if x[:1].isupper()), len(parts))  # module path, then classes
        nid = '::'.join(['/'.join(parts[:i])+'.py', *parts[i:], tc.get('name')])
        fail, err, skip = tc.find('failure'), tc.find('error'), tc.find('skipped')
        bad = fail if fail is not None else err
        status = 'failed' if fail is not None else 'error' if err is not None else 'skipped' if skip is not None else 'passed'
        msg = ((bad if bad is not None else skip).get('message', '') if status != 'passed' else '')
        props = [(p.get('name'), p.get('value')) for p in tc.iter('property')]
        out[nid] = (status, ' '.join(msg.split())[:200], props)
    return out, float(suite.get('time', 0))

def summary(name, res, secs):
    c = Counter(s for s, _, _ in res.values())
    swapped = sum(any(k == 'ckc_swapped' for k, _ in p) for _, _, p in res.values())
    extra = f', {swapped} used ConKernelManager' if swapped else ''
    print(f'{name}: {len(res)} tests: {c["passed"]} passed, {c["failed"]} failed, {c["error"]} errors, '
          f'{c["skipped"]} skipped in {secs:.1f}s{extra}')

def detail(nid, res):
    status, msg, props = res[nid]
    print(f'  {nid}\n      {status}: {msg}')
    for s in dict.fromkeys(v for k, v in props if k == 'ckc_stuck'): print(f'      stuck: {s}')

def main(base_xml, swap_xml):
    base, bt = load(base_xml)
    swap, st = load(swap_xml)
    summary('baseline', base, bt)
    summary('swapped ', swap, st)
    ok = ('passed', 'skipped')
    regress = [n for n in base if base[n][0] == 'passed' and n in swap and swap[n][0] not in ok]
    both = [n for n in base if base[n][0] not in ok]
    fixed = [n for n in swap if swap[n][0] == 'passed' and n in base and base[n][0] not in ok]
    print(f'\npass on baseline, fail swapped ({len(regress)}):')
    for n in regress: detail(n, swap)
    print(f'\nfail on baseline ({len(both)}):')
    for n in both:
        detail(n, base)
        if n in swap: print(f'      swapped: {swap[n][0]}')
    used_ok = [n for n in swap if swap[n][0] == 'passed' and any(k == 'ckc_swapped' for k, _ in swap[n][2])]
    print(f'\npass swapped and used ConKernelManager ({len(used_ok)}):')
    for n in used_ok: print(f'  {n}')
    if fixed:
        print(f'\nfail on baseline, pass swapped ({len(fixed)}):')
        for n in fixed: print(f'  {n}')
    return 1 if regress else 0

if __name__ == '__main__':
    if len(sys.argv) != 3: sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
