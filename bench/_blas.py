"""Which BLAS a bench process uses, chosen before numpy/torch are imported.

Debian's numpy and python3-torch (BLAS_INFO=generic) both call whatever libblas.so.3 the
system's alternative points to. On a machine with only libblas3 that is netlib's reference
BLAS: single-threaded, ~6 GFLOP/s for sgemm, which would make the peer absurdly slow. So the
bench scripts take --blas:

  system    use the libblas.so.3 the system resolves (whatever is installed)
  openblas  put Debian's OpenBLAS first on LD_LIBRARY_PATH: the system's openblas-pthread
            directory if libopenblas0-pthread is installed, else bench/.openblas/ (unpacked
            by bench/fetch_openblas.sh, no install needed); error if neither exists
  auto      openblas if available, else system (the default)

Switching means re-executing the interpreter with a new environment (the dynamic loader
reads LD_LIBRARY_PATH only at start). OPENBLAS_NUM_THREADS is set to the thread count the
caller asks for, because PyTorch's set_num_threads does not reach OpenBLAS's pthread pool.
"""
import glob
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
_MARK = "TESLA_BENCH_REEXEC"


def openblas_dir():
    cands = glob.glob("/usr/lib/*/openblas-pthread") + glob.glob(
        os.path.join(HERE, ".openblas/usr/lib/*/openblas-pthread"))
    for d in cands:
        if os.path.exists(os.path.join(d, "libblas.so.3")):
            return d
    return None


def select(mode, threads=None, unset=()):
    """Re-exec this script once with the environment for `mode`. Returns on the second pass."""
    if os.environ.get(_MARK) == "1":
        return
    env = dict(os.environ)
    env[_MARK] = "1"
    removed = {k: env.pop(k) for k in unset if k in env}
    if removed:
        env["TESLA_BENCH_UNSET"] = ",".join("%s=%s" % kv for kv in removed.items())
    if mode in ("auto", "openblas"):
        d = openblas_dir()
        if d is None and mode == "openblas":
            sys.exit("no OpenBLAS found: install libopenblas0-pthread or run bench/fetch_openblas.sh")
        if d is not None:
            env["LD_LIBRARY_PATH"] = d + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    elif mode != "system":
        sys.exit("--blas must be auto, system or openblas")
    if threads is not None:
        env["OPENBLAS_NUM_THREADS"] = str(threads)
        env["OMP_NUM_THREADS"] = str(threads)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def info():
    """Describe the BLAS loaded into this process (call after numpy/torch are imported)."""
    libs = []
    for line in open("/proc/self/maps"):
        parts = line.split()
        if len(parts) >= 6 and ("blas" in parts[-1] or "lapack" in parts[-1]):
            if parts[-1] not in libs:
                libs.append(parts[-1])
    out = {"libs": libs, "kind": "unknown"}
    ob = [p for p in libs if "openblas" in os.path.basename(p) and ".so" in p]
    if ob:
        import ctypes
        out["kind"] = "openblas"
        try:
            lib = ctypes.CDLL(ob[0])
            lib.openblas_get_corename.restype = ctypes.c_char_p
            lib.openblas_get_config.restype = ctypes.c_char_p
            out["openblas_core"] = lib.openblas_get_corename().decode()
            out["openblas_config"] = lib.openblas_get_config().decode()
            out["openblas_threads"] = lib.openblas_get_num_threads()
        except (OSError, AttributeError) as e:
            out["openblas_error"] = str(e)
    elif any("/blas/libblas.so" in p for p in libs):
        out["kind"] = "netlib-reference"
    try:
        import threadpoolctl  # optional; not in Debian 12's default python set here
        out["threadpoolctl"] = threadpoolctl.threadpool_info()
    except ImportError:
        pass
    env = {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                        "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    out["env"] = env
    out["loadavg_1m_at_end"] = os.getloadavg()[0]  # other load on the machine skews figures
    if os.environ.get("TESLA_BENCH_UNSET"):
        out["unset_for_run"] = os.environ["TESLA_BENCH_UNSET"]
    return out
