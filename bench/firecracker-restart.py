#!/usr/bin/env python3
"""A real Firecracker restored through `userfaultfd firecracker --keeper`, with the server killed
under it (issue 18, "survives its own restart"). Needs a Firecracker built beside the project and a
snapshot made by the shared driver (../shared/firecracker/README.md: `drive.py snapshot`).

  bench/firecracker-restart.py restart N [--prefetch]   N restores with a SIGKILL of the server in
        the middle of the guest's first read of its memory (started again at once), alternated with
        N restores with no kill; per kill: restart (kill -> the new server's `resume` line) and the
        stall (that read's time minus the median read with no kill); every checksum checked.
  bench/firecracker-restart.py restart N --pause-ms M   the same, but the server is only stopped
        (SIGSTOP) for M ms and let go on (SIGCONT), not killed: what a stall of that length costs
        the guest without any restart, to compare with.
  bench/firecracker-restart.py grace     the server killed and not started again: the keeper kills
        the VM after --keeper-grace-ms (2000).
  bench/firecracker-restart.py handover  SIGTERM hands the VM to the keeper; a server started a
        second later takes it back and the guest's checksum is right.

Environment: SHARED_FIRECRACKER (default ../shared/firecracker beside the project), and drive.py's
FCWORK, FIRECRACKER. Writes FCWORK/runs/restart-MODE/result.json and prints a summary."""
import json, os, signal, statistics, subprocess, sys, time

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.environ.get('SHARED_FIRECRACKER', os.path.join(PROJECT, '..', 'shared', 'firecracker')))
import drive  # noqa: E402

mode = sys.argv[1] if len(sys.argv) > 1 else 'restart'
pause_ms = float(sys.argv[sys.argv.index('--pause-ms') + 1]) if '--pause-ms' in sys.argv else None
meta = json.load(open(drive.META))
work = f'{drive.RUNS}/restart-{mode}{"-pause" if pause_ms is not None else ""}'
os.makedirs(work, exist_ok=True)
sock, keeper = f'{work}/uffd.sock', f'{work}/keeper.sock'
for p in (sock, keeper):
    if os.path.exists(p):
        os.unlink(p)
grace_ms = '2000' if mode == 'grace' else '20000'
cmd = ['node', f'{PROJECT}/dist/lib/cli.js', 'firecracker', '--socket', sock, '--mem', drive.MEM,
       '--keeper', keeper, '--keeper-grace-ms', grace_ms]
if '--prefetch' not in sys.argv:
    cmd.append('--no-prefetch')  # the guest's first read goes through faults when the server dies
log = open(f'{work}/servers.txt', 'w')


def server():
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return p, drive.Lines(p.stdout, raw=log)


def load(tag):
    """A fresh Firecracker restoring the snapshot; returns it, its serial lines and the first read's begin."""
    fc, api_sock, serial = drive.start_fc(tag, work)
    t0 = time.monotonic()
    drive.api(api_sock, 'PUT', '/snapshot/load', {'snapshot_path': drive.VMSTATE,
              'mem_backend': {'backend_type': 'Uffd', 'backend_path': sock}, 'resume_vm': True})
    tb, _, m = serial.wait(r'^csum-begin (\d+)$', after=t0, timeout=60)
    return fc, serial, tb, m.group(1)


def read_end(serial, tb, n):
    """When the read begun at tb ended, and whether its checksum is the snapshot's."""
    tc, _, m = serial.wait(rf'^csum {n} (\S+)$', after=tb, timeout=120)
    serial.wait(r'^tick (\d+)$', after=tc, timeout=10)  # and the guest goes on
    return tc - tb, m.group(1) == meta['md5']


def stop(srv):
    srv.send_signal(signal.SIGINT)
    try:
        srv.wait(timeout=10)
    except subprocess.TimeoutExpired:
        srv.kill()


srv, out = server()
out.wait(r'"event":"listening"', timeout=30)
res = {'mode': mode, 'command': cmd, 'runs': []}
try:
    if mode == 'restart':
        n_kills = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else 10
        for i in range(2 * n_kills):
            kill = i % 2 == 0
            fc, serial, tb, n = load(f'restart-{i}')
            run = {'kill': kill}
            try:
                if kill:
                    time.sleep(0.05 + 0.05 * (i // 2 % 4))  # somewhere in the middle of the read
                    tk = time.monotonic()
                    if pause_ms is not None:
                        srv.send_signal(signal.SIGSTOP)
                        time.sleep(pause_ms / 1000)
                        srv.send_signal(signal.SIGCONT)
                        run['restart_s'] = time.monotonic() - tk
                    else:
                        srv.kill()
                        srv.wait()
                        srv, out = server()
                        tr, _, _ = out.wait(r'"event":"resume"', after=tk, timeout=30)
                        run['restart_s'] = tr - tk
                run['read_s'], run['csum_ok'] = read_end(serial, tb, n)
                run['vm_alive'] = fc.poll() is None
            finally:
                fc.kill()
                fc.wait()
            res['runs'].append(run)
            print(json.dumps(run), flush=True)
        plain = statistics.median(r['read_s'] for r in res['runs'] if not r['kill'])
        kills = [r for r in res['runs'] if r['kill']]
        for r in kills:
            r['stall_s'] = r['read_s'] - plain
        over = [r['stall_s'] - r['restart_s'] for r in kills]
        res['summary'] = {
            'kills': len(kills),
            'all_right': all(r['csum_ok'] and r['vm_alive'] for r in res['runs']),
            'read_no_kill_ms': round(plain * 1000, 1),
            'restart_ms_p50': round(statistics.median(r['restart_s'] for r in kills) * 1000, 1),
            'restart_ms_max': round(max(r['restart_s'] for r in kills) * 1000, 1),
            'stall_ms_p50': round(statistics.median(r['stall_s'] for r in kills) * 1000, 1),
            'stall_ms_max': round(max(r['stall_s'] for r in kills) * 1000, 1),
            'stall_past_restart_ms_max': round(max(over) * 1000, 1),
            'over_50ms': sum(1 for o in over if o > 0.05),
        }
    elif mode == 'grace':
        fc, serial, tb, n = load('grace')
        time.sleep(0.1)
        tk = time.monotonic()
        srv.kill()
        srv.wait()
        fc.wait(timeout=30)
        res['summary'] = {'vm_killed_after_s': round(time.monotonic() - tk, 2), 'signal': -fc.returncode}
        srv, out = server()  # so that the SIGINT below has something to stop
    elif mode == 'handover':
        fc, serial, tb, n = load('handover')
        time.sleep(0.1)
        tk = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        srv.wait(timeout=10)
        exited = time.monotonic() - tk
        time.sleep(1)
        srv, out = server()
        out.wait(r'"event":"resume"', timeout=30)
        read_s, ok = read_end(serial, tb, n)
        res['summary'] = {'server_exited_s': round(exited, 3), 'csum_ok': ok, 'read_s': round(read_s, 2),
                          'vm_alive': fc.poll() is None}
        fc.kill()
        fc.wait()
    else:
        sys.exit(f'unknown mode {mode}: restart, grace or handover')
finally:
    time.sleep(0.5)
    stop(srv)
    res['server_tail'] = [x for _, x in out.lines if x][-3:]
json.dump(res, open(f'{work}/result.json', 'w'), indent=1)
print(json.dumps(res['summary']))
