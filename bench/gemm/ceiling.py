# ceiling.py: the machine's single-core sgemm ceiling (numpy -> OpenBLAS, one thread), and
# numpy's time on the forward GEMM of each layer shape for comparison. Run by run.sh.
import sys, time
import numpy as np
# Thread CPU time, best of 7: the machine is shared; OpenBLAS with one thread computes in
# the calling thread.

def gflops(m, k, n, min_time=0.2):
    a = np.random.rand(m, k).astype(np.float32)
    b = np.random.rand(k, n).astype(np.float32)
    a @ b
    reps, t0 = 0, time.thread_time()
    while time.thread_time() - t0 < 0.05:
        a @ b; reps += 1
    samples = []
    for _ in range(7):
        t = time.thread_time()
        for _ in range(reps): a @ b
        samples.append((time.thread_time() - t) / reps)
    return 2.0 * m * k * n / min(samples) / 1e9

for n in (2048, 4096):
    print(f"numpy sgemm {n}x{n}x{n}: {gflops(n, n, n):6.1f} GFLOP/s  (ceiling)")
if "--shapes" in sys.argv:
    for B in (32, 64, 128, 256):
        for IN, OUT in ((784, 1024), (1024, 1024), (1024, 10), (3136, 256), (256, 10), (1960, 10)):
            print(f"numpy X@W {B}x{IN}x{OUT}: {gflops(B, IN, OUT):6.1f} GFLOP/s")
