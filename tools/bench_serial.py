"""Effective throughput of a serial deploy (SerialTransport.put) as a fraction of the line rate.

    python tools/bench_serial.py [--raw | --throttle] [--seconds 5]

Host and `edgeff agent` (in a thread) talk over two pty pairs joined by the relay of
tests/test_serial.py. A pty ignores the baud rate, so two modes are measured:

- raw: the relay forwards as fast as the ptys go. The line rate is not enforced, so the
  "fraction of line rate" only shows that the protocol is not the bottleneck.
- throttle: the relay paces each direction at the nominal line rate (baud / 10 bytes/s,
  8N1), like a real UART; the fraction then shows the protocol's cost (frame headers,
  CRC, offsets, the stop-and-wait ACK round trip per chunk).

Both by default, in one run. Payload bytes/s = file bytes / wall time of put() (commit and
sha256 check included). A benchmark, not a test: nothing is asserted.
"""

import argparse
import hashlib
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from ptyrelay import PtyRelay  # noqa: E402  the relay the tests use

from edgeff.deploy.serial_agent import Agent  # noqa: E402
from edgeff.deploy.serial_link import SerialTransport, chunk_size_for  # noqa: E402

BAUDS = (115200, 921600)


def measure(baud, throttle, size, workdir):
    """Payload bytes/s of one put of `size` random bytes, and the bytes sent (resends included)."""
    line_rate = baud / 10
    src = os.path.join(workdir, f"src-{baud}-{throttle}.bin")
    with open(src, "wb") as f:
        f.write(os.urandom(size))
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with PtyRelay(bytes_per_s=line_rate if throttle else None) as relay:
        agent = Agent(relay.agent_name, os.path.join(workdir, f"root-{baud}-{throttle}"), baud=baud)
        thread = threading.Thread(target=agent.serve_forever, daemon=True)
        thread.start()
        try:
            with SerialTransport(relay.host_name, baud=baud) as host:
                host.call("ping")                       # port open and agent awake: outside the timing
                t0 = time.perf_counter()
                sent = host.put(src, "bench.bin", digest)
                seconds = time.perf_counter() - t0
        finally:
            agent.stop()
            thread.join()
            agent.close()
    return size / seconds, sent, seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--throttle", action="store_true", help="only the paced relay (line rate enforced)")
    mode.add_argument("--raw", action="store_true", help="only the unpaced relay (pty speed)")
    p.add_argument("--seconds", type=float, default=5.0, help="line time of the file in throttle mode (default 5)")
    p.add_argument("--raw-mib", type=float, default=4.0, help="file size in raw mode, MiB (default 4)")
    args = p.parse_args(argv)
    modes = [False] if args.raw else [True] if args.throttle else [False, True]

    print("serial put over a pty pair; line rate = baud/10 bytes/s (8N1); agent in a thread of this process")
    print(f"{'mode':<9} {'baud':>7} {'chunk':>6} {'file bytes':>11} {'sent':>11} {'seconds':>8} "
          f"{'payload B/s':>12} {'fraction of line rate':>22}")
    with tempfile.TemporaryDirectory() as workdir:
        for throttle in modes:
            for baud in BAUDS:
                size = int(baud / 10 * args.seconds) if throttle else int(args.raw_mib * 2**20)
                rate, sent, seconds = measure(baud, throttle, size, workdir)
                name = "throttle" if throttle else "raw"
                print(f"{name:<9} {baud:>7} {chunk_size_for(baud):>6} {size:>11,} {sent:>11,} {seconds:>8.2f} "
                      f"{rate:>12,.0f} {rate / (baud / 10):>22.3f}")
    if False in modes:
        print("raw: a pty does not enforce the baud rate, so raw fractions above 1 only say the protocol "
              "is not the limit; see throttle for the protocol's cost at the real line rate")
    if True in modes:
        print("throttle: the relay paces each direction at the line rate; 1 - fraction = framing + ACK round trips")
    return 0


if __name__ == "__main__":
    sys.exit(main())
