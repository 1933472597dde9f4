"""The lines every lesson script starts with: its flags, its output folder, saving figures.

A lesson (lessons/NN_topic.py) is a script and a notebook at once (jupytext percent format). As
a script it refuses a flag it does not know (a mistyped `--iter 5` is an error, not 40 silent
iterations); in Jupyter, whose kernel has flags of its own (`-f kernel.json`), it reads none and
runs with its defaults, and shows its figures inline. lessons/README.md lists the lessons.

A quick run on a small machine uses one BLAS thread and one numba thread: the work is small,
and idle worker threads spinning on 2 busy cores made a lesson several times slower. The
results are the same.
"""

import argparse
import os
import sys
from pathlib import Path

# The settings a quick run on a small machine starts with, unless the user set them.
QUICK_THREADS = {"OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
SMALL_MACHINE_CPUS = 4


def in_notebook():
    """Whether this runs in a Jupyter kernel: one has started, not merely been imported (a test
    run imports ipykernel to check that it is installed)."""
    kernelapp = sys.modules.get("ipykernel.kernelapp")
    return kernelapp is not None and kernelapp.IPKernelApp.initialized()


def parser(description, full_help):
    """A lesson's command line with --out and --full; the lesson adds its own flags to it."""
    # No abbreviations: Jupyter may pass --f=kernel.json, which is not --full.
    lesson_parser = argparse.ArgumentParser(description=description, allow_abbrev=False)
    lesson_parser.add_argument("--out", help="folder for figures and runs (default: out/ in "
                                             "the lesson's folder)")
    lesson_parser.add_argument("--full", action="store_true", help=full_help)
    return lesson_parser


def parse(lesson_parser):
    """(args, OUT): the lesson's flags and its output folder, created if needed. An unknown flag
    stops a script with a usage message; in a notebook the kernel's own flags are not the
    lesson's, so it runs with the defaults."""
    args = lesson_parser.parse_args([] if in_notebook() else None)
    if not args.full:
        one_thread_on_a_small_machine()
    announce_first_compile()
    here = Path.cwd() if in_notebook() else Path(sys.argv[0]).resolve().parent
    out = Path(args.out) if args.out else here / "out"
    out.mkdir(parents=True, exist_ok=True)
    return args, out


def one_thread_on_a_small_machine():
    """On 4 CPUs or fewer, run with one BLAS and one numba thread (QUICK_THREADS) where the user
    has not chosen. BLAS reads its setting when NumPy loads, before this runs, so a script
    restarts itself once with the setting in its environment; a notebook can change numba's."""
    missing = {k: v for k, v in QUICK_THREADS.items() if k not in os.environ}
    if not missing or (os.cpu_count() or 1) > SMALL_MACHINE_CPUS:
        return
    if in_notebook():
        import numba

        numba.set_num_threads(1)
        return
    print(f"quick mode on {os.cpu_count()} CPUs: restarting with "
          f"{' '.join(f'{k}={v}' for k, v in missing.items())} (set them to choose otherwise)",
          flush=True)
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **missing})


def uncompiled_kernels():
    """The names of minires's numba kernels that have no compiled code on disk yet (numba keeps
    a kernel's machine code in a .nbi/.nbc pair, in __pycache__ or under NUMBA_CACHE_DIR)."""
    import importlib
    import pkgutil

    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    from .backends import numba as numba_backend

    folder = Path(numba_backend.__file__).parent
    cache = Path(os.environ.get("NUMBA_CACHE_DIR", folder / "__pycache__"))
    on_disk = {path.name.split(".py")[0] for path in cache.rglob("*.nbi")}
    missing = []
    for module_info in pkgutil.iter_modules([str(folder)]):
        if module_info.name.endswith("_naive"):
            continue  # version 1 of a kernel: for tests and benchmarks, no lesson calls it
        module = importlib.import_module(f"{numba_backend.__name__}.{module_info.name}")
        for kernel in vars(module).values():
            if (isinstance(kernel, CPUDispatcher) and kernel.__module__ == module.__name__
                    and not isinstance(kernel._cache, NullCache)):  # inlined ones: no cache
                code = kernel.py_func
                name = f"{module_info.name}.{code.__qualname__}-{code.__code__.co_firstlineno}"
                if name not in on_disk:
                    missing.append(name)
    return missing


def announce_first_compile():
    """numba compiles a kernel on its first call and keeps it on disk; say so before a lesson
    seems to hang, while some of minires's kernels have never been compiled here."""
    missing = uncompiled_kernels()
    if missing:
        print(f"{len(missing)} of minires's numba kernels are not compiled yet: a lesson that "
              "uses them compiles them on first use, once (about a minute on 2 cores)",
              flush=True)


def save(fig, path):
    """Write a matplotlib figure to path; show it too when running in a notebook."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100, bbox_inches="tight")
    print(f"figure saved: {path}")
    if in_notebook():
        plt.show()
    plt.close(fig)
