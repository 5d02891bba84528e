import os

# Tests never touch a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Under pytest-xdist (`make test`: one worker per core) every worker's BLAS, OpenMP,
# torch and reptrans pools would each start one thread per core and oversubscribe the
# machine: on 2 cores the suite took 129-141 s so, 89-107 s with one thread per worker
# (user CPU 240 s -> 168-200 s). The defaults are set before numpy or torch load in the
# worker; a variable already set wins, and a test that sets its own count (threadpoolctl,
# align.set_threads) can still raise it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    _per_worker = str(max(1, len(os.sched_getaffinity(0)) // max(1, _workers)))
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "REPTRANS_THREADS"):
        os.environ.setdefault(_var, _per_worker)
    import sys

    if "numpy" in sys.modules:  # a plugin loaded it first: limit the pools it started
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(_per_worker))
