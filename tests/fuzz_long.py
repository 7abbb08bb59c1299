"""Run the stateful fuzz suite (tests/test_fuzz.py) for as long as you like: rounds of examples, each round with its own seed.

    .venv/bin/python tests/fuzz_long.py --minutes 30 [--seed 1] [--tiny 20] [--ipy 10] [--ws 10] [--steps 15]

Prints each round's seed and the examples explored so far; on a failure, the seed to replay it with
(`pytest tests/test_fuzz.py --hypothesis-seed=SEED` with the same FUZZ_* settings) and pytest's report."""
import argparse, os, subprocess, sys, tempfile, time
from pathlib import Path

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--minutes', type=float, default=30, help='stop starting new rounds after this long')
    p.add_argument('--seed', type=int, default=int(time.time()), help='seed of the first round (then +1 per round)')
    p.add_argument('--tiny', type=int, default=20, help='examples per round on the tiny kernel')
    p.add_argument('--ipy', type=int, default=10, help='examples per round on ipykernel')
    p.add_argument('--ws', type=int, default=10, help='examples per round on ipykernel over a Jupyter Server\'s websocket')
    p.add_argument('--steps', type=int, default=15, help='steps per example')
    a = p.parse_args()
    root = Path(__file__).parent.parent
    counter = Path(tempfile.mkdtemp())/'examples'
    counter.write_text('')
    env = dict(os.environ, FUZZ_TINY=str(a.tiny), FUZZ_IPY=str(a.ipy), FUZZ_WS=str(a.ws), FUZZ_STEPS=str(a.steps), FUZZ_COUNT_FILE=str(counter),
               FUZZ_TIMEOUT=str(60*60))
    end, seed, rounds = time.monotonic()+60*a.minutes, a.seed, 0
    while time.monotonic() < end:
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'tests/test_fuzz.py',
                            f'--hypothesis-seed={seed}'], cwd=root, env=env, capture_output=True, text=True)
        rounds += 1
        n = len(counter.read_text())
        print(f'round {rounds} seed {seed}: {"ok" if r.returncode == 0 else "FAILED"} in {time.monotonic()-t0:.0f} s; '
              f'{n} examples explored so far', flush=True)
        if r.returncode != 0:
            print(r.stdout[-20000:], r.stderr[-5000:], sep='\n')
            print(f'\nFAILED with seed {seed}: replay with FUZZ_TINY={a.tiny} FUZZ_IPY={a.ipy} FUZZ_WS={a.ws} FUZZ_STEPS={a.steps} '
                  f'.venv/bin/pytest tests/test_fuzz.py --hypothesis-seed={seed}')
            return 1
        seed += 1
    print(f'{rounds} rounds, {len(counter.read_text())} examples, no failure')

if __name__ == '__main__': sys.exit(main())
